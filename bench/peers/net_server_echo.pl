#!/usr/bin/perl
# The echo demo on Perl's Net::Server: the peer netserver is measured against.
#   perl net_server_echo.pl Single|PreFork|Fork|Multiplex PORT [CHILDREN]
# Banner with the pid, every line back with CRLF, quit/bye closes: the same lines as echo_server.
use strict;
use warnings;
use Socket qw(IPPROTO_TCP TCP_NODELAY);

package PerlEcho;

my ($personality, $port, $children) = @ARGV;
die "usage: $0 Single|PreFork|Fork|Multiplex PORT [CHILDREN]\n" unless $personality && $port;
my $base = $personality eq 'Single' ? 'Net::Server' : "Net::Server::$personality";
eval "require $base" or die $@;
our @ISA = ($base);

sub banner { return "Welcome to \"perl\" (personality $personality, pid $$)\r\n" }

# Like netserver, no Nagle delays on small replies (so the comparison is about the servers).
sub post_accept_hook { my $self = shift; $self->{server}{client}->setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) }

# Single, PreFork and Fork: one client per process, plain blocking reads.
sub process_request {
    local $| = 1;
    print banner();
    while (defined(my $line = <STDIN>)) {
        $line =~ s/\r?\n\z//;
        last if $line eq 'quit' || $line eq 'bye';
        print "$line\r\n";
    }
}

# Multiplex: callbacks on IO::Multiplex's select loop.
sub mux_connection {
    my ($self, $mux, $fh) = @_;
    $fh->setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1);
    print $fh banner();
}

sub mux_input {
    my ($self, $mux, $fh, $in_ref) = @_;
    while ($$in_ref =~ s/\A(.*?)\r?\n//) {
        my $line = $1;
        if ($line eq 'quit' || $line eq 'bye') { $mux->shutdown($fh, 1); return; }
        print $fh "$line\r\n";
    }
}

my %pool = $personality eq 'PreFork'
    ? (min_servers => $children // 60, max_servers => ($children // 60) + 40,
       min_spare_servers => 10, max_spare_servers => ($children // 60) - 1, max_requests => 1_000_000)
    : ();
PerlEcho->run(host => '127.0.0.1', port => $port, log_level => 1, listen => 4096, %pool);
