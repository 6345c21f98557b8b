#!/usr/bin/perl
# The echo demo on POE::Component::Server::TCP, as a benchmark peer.
#   perl poe_echo.pl PORT
use strict;
use warnings;
use POE qw(Component::Server::TCP);
use Socket qw(IPPROTO_TCP TCP_NODELAY);

POE::Component::Server::TCP->new(
    Address            => '127.0.0.1',
    Port               => $ARGV[0] // 8000,
    ClientConnected    => sub {
        setsockopt($_[HEAP]{client}->get_output_handle, IPPROTO_TCP, TCP_NODELAY, 1);  # as netserver does
        $_[HEAP]{client}->put("Welcome to \"poe\" (personality poe, pid $$)");
    },
    ClientInput        => sub {
        my ($heap, $line) = @_[HEAP, ARG0];
        if ($line eq 'quit' || $line eq 'bye') { $heap->{client}->shutdown_output; $_[KERNEL]->yield('shutdown'); return; }
        $heap->{client}->put($line);
    },
);
POE::Kernel->run;
