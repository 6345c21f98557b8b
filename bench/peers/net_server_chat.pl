#!/usr/bin/perl
# The chat server of the Net::Server::Multiplex tutorial, as a benchmark peer: the same lines
# (welcome, join, "Client HOST:PORT said: TEXT" to the others, bye, leave) without its debug prints,
# and with TCP_NODELAY like netserver (the tutorial's server stalls 40 ms on Nagle + delayed ACK).
#   perl net_server_chat.pl PORT
use strict;
use warnings;

package PerlChat;
use base 'Net::Server::Multiplex';
use Socket qw(IPPROTO_TCP TCP_NODELAY);

my $EOL = "\r\n";

sub peer { my $self = shift; return "$self->{peeraddr}:$self->{peerport}" }

sub mux_connection {
    my ($self, $mux, $fh) = @_;
    $self->{peerport} = $self->{net_server}{server}{peerport};
    $fh->setsockopt(IPPROTO_TCP, TCP_NODELAY, 1);
    print $fh "Welcome, to the server!$EOL";
    $self->tell_others($mux, "Please welcome " . $self->peer . ", who just joined us$EOL", $fh);
}

sub mux_input {
    my ($self, $mux, $fh, $in_ref) = @_;
    while ($$in_ref =~ s/\A(.*?)\r?\n//) {
        my $text = $1;
        next unless length $text;
        $self->tell_others($mux, "Client " . $self->peer . " said: $text$EOL", $fh);
        $mux->shutdown($fh, 1) if $text eq 'bye';
    }
}

sub mux_close {
    my ($self, $mux, $fh) = @_;
    $self->tell_others($mux, "Unfortunately " . $self->peer . " left us$EOL", $fh) if exists $self->{peerport};
}

sub tell_others {
    my ($self, $mux, $message, $sender) = @_;
    for my $fh ($mux->handles) {
        print $fh $message unless $fh eq $sender;
    }
}

PerlChat->run(host => '127.0.0.1', port => $ARGV[0] // 8000, log_level => 1, listen => 4096);
