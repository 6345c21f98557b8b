#!/usr/bin/perl
# Turns scripts/bench's raw result lines into bench/results/results.md (medians, ratios, targets)
# and results.png (gnuplot).   perl bench/report.pl RAW_FILE RESULTS_DIR [NAME]  (NAME.md, NAME.png)
use strict;
use warnings;
use POSIX qw(strftime);

my ($raw_file, $dir, $name) = @ARGV;
die "usage: $0 RAW_FILE RESULTS_DIR [NAME]\n" unless $raw_file && $dir;
$name //= 'results';

# --- read: server=X load=Y run=N key=value ... [note=free text] ------------------------------
my %runs;   # {load}{server} -> [ {field => value} ]
open my $in, '<', $raw_file or die "$raw_file: $!\n";
while (my $line = <$in>) {
    chomp $line;
    my $note = $line =~ s/ note=(.*)$// ? $1 : undef;
    my %f = map { split /=/, $_, 2 } grep { /=/ } split / /, $line;
    $f{note} = $note if defined $note;
    push @{ $runs{$f{load}}{$f{server}} }, \%f if $f{load} && $f{server};
}
close $in;

sub median {
    my @v = sort { $a <=> $b } grep { defined && $_ ne '' } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}
sub stat_of {   # median of a field over the runs of (load, server)
    my ($load, $server, $field) = @_;
    my $list = $runs{$load}{$server} or return undef;
    return median(map { $_->{$field} } @$list);
}
sub range_of {  # "median (min - max)" of a field over the runs, for the before/after table
    my ($load, $server, $field) = @_;
    my $list = $runs{$load}{$server} or return '-';
    my @values = sort { $a <=> $b } map { $_->{$field} } @$list;
    return sprintf('%.2f', median(@values)) if @values == 1;
    return sprintf('%.2f (%.2f - %.2f)', median(@values), $values[0], $values[-1]);
}
sub count_of { my ($load, $server) = @_; return scalar @{ $runs{$load}{$server} // [] } }
sub group {     # 1234567 -> 1,234,567
    my $n = shift;
    return '-' unless defined $n;
    my $text = sprintf('%.0f', $n);
    1 while $text =~ s/^(\d+)(\d{3})/$1,$2/;
    return $text;
}
sub ratio {
    my ($a, $b) = @_;
    return undef unless defined $a && defined $b && $b > 0;
    return $a / $b;
}
sub show_ratio { my $r = shift; return defined $r ? sprintf('%.2fx', $r) : '-' }

my @servers = (
    [ 'raw-epoll',      'raw epoll (C++, the limit)' ],
    [ 'raw-prefork',    'raw prefork (C++, the process-per-client limit)' ],
    [ 'ns-multiplex',   'netserver multiplex' ],
    [ 'ns-workers',     'netserver multiplex, 2 workers' ],
    [ 'ns-before',      'netserver multiplex at the baseline revision' ],
    [ 'ns-prefork',     'netserver prefork' ],
    [ 'ns-prefork-before', 'netserver prefork at the baseline revision' ],
    [ 'ns-fork',        'netserver fork' ],
    [ 'ns-single',      'netserver single' ],
    [ 'perl-multiplex', 'Perl Net::Server::Multiplex' ],
    [ 'perl-prefork',   'Perl Net::Server::PreFork' ],
    [ 'perl-single',    'Perl Net::Server (Single)' ],
    [ 'perl-fork',      'Perl Net::Server::Fork' ],
    [ 'poe',            'Perl POE::Component::Server::TCP' ],
);
my %label = map { $_->[0] => $_->[1] } @servers;
sub loads_of { my $kind = shift; return sort { ($a =~ /(\d+)$/)[0] <=> ($b =~ /(\d+)$/)[0] } grep { /^$kind-/ } keys %runs }
sub present { my @loads = @_; return grep { my $s = $_->[0]; grep { $runs{$_}{$s} } @loads } @servers }

my $md = '';
my $cpu = `grep -m1 'model name' /proc/cpuinfo` =~ s/.*:\s*//r =~ s/\s+$//r;
my $repeat = 0;
for my $load (keys %runs) { for my $s (keys %{ $runs{$load} }) { my $n = count_of($load, $s); $repeat = $n if $n > $repeat } }
$md .= "# netserver benchmark results\n\n";
$md .= sprintf("Measured %s on %s (%d CPUs, Linux %s), all servers in one run of `scripts/bench`; every\n"
             . "figure is the median of %d run(s). Servers ran on CPU 0, the load generator (netbench, one epoll\n"
             . "thread) on CPU 1.\n\n",
    strftime('%Y-%m-%d', localtime), $cpu, `nproc` + 0, (`uname -r` =~ s/\s+$//r), $repeat);

# --- echo ----------------------------------------------------------------------------------
my @echo = loads_of('echo');
if (@echo) {
    $md .= "## Echo: round trips per second (p99 latency)\n\nClosed loop: each connection sends a 64-byte line and waits for it to come back.\n\n";
    $md .= '| server | ' . join(' | ', map { (/(\d+)$/)[0] . ' conn.' } @echo) . " |\n|---|" . ('---|' x @echo) . "\n";
    for my $s (present(@echo)) {
        $md .= "| $s->[1] |";
        for my $load (@echo) {
            my $rps = stat_of($load, $s->[0], 'rps');
            my $p99 = stat_of($load, $s->[0], 'p99_us');
            my $starved = stat_of($load, $s->[0], 'starved') // 0;
            $md .= defined $rps ? sprintf(' %s (%s us)%s |', group($rps), group($p99), $starved > 0 ? ", $starved starved" : '') : ' - |';
        }
        $md .= "\n";
    }
    $md .= "\n\"starved\": connections that never got an answer (a personality serving fewer clients at once than connect).\n\n";
    $md .= "Server CPU per round trip (user + system, the server and its child processes; lower is better):\n\n";
    $md .= '| server | ' . join(' | ', map { (/(\d+)$/)[0] . ' conn.' } @echo) . " |\n|---|" . ('---|' x @echo) . "\n";
    for my $s (present(@echo)) {
        $md .= "| $s->[1] |" . join('', map {
            my $cpu = stat_of($_, $s->[0], 'server_cpu_us_per_request');
            defined $cpu ? sprintf(' %.2f us |', $cpu) : ' - |' } @echo) . "\n";
    }
    $md .= "\n";
}

# --- connect -------------------------------------------------------------------------------
if ($runs{'connect-10'}) {
    $md .= "## New connections per second (10 at a time: connect, banner, one echo, close)\n\n| server | connections/s | p99 |\n|---|---|---|\n";
    for my $s (present('connect-10')) {
        $md .= sprintf("| %s | %s | %s us |\n", $s->[1], group(stat_of('connect-10', $s->[0], 'connections_per_s')),
            group(stat_of('connect-10', $s->[0], 'p99_us')));
    }
    $md .= "\n";
}

# --- chat ----------------------------------------------------------------------------------
my @chat = loads_of('chat');
if (@chat) {
    $md .= "## Chat: messages delivered per second (round p99; server CPU per message)\n\n"
         . "Every client sends one line per round; a round ends when every client got every other client's line.\n\n";
    $md .= '| server | ' . join(' | ', map { (/(\d+)$/)[0] . ' clients' } @chat) . " |\n|---|" . ('---|' x @chat) . "\n";
    for my $s (present(@chat)) {
        $md .= "| $s->[1] |";
        for my $load (@chat) {
            my $rate = stat_of($load, $s->[0], 'deliveries_per_s');
            my $fraction = stat_of($load, $s->[0], 'delivered_fraction');
            if (!defined $rate) { $md .= ' - |'; next }
            if (defined $fraction && $fraction < 1) { $md .= sprintf(' delivered fraction %.3f: the broadcast reaches nobody |', $fraction); next }
            my $cpu_msg = stat_of($load, $s->[0], 'server_cpu_us_per_message');
            $md .= sprintf(' %s (%s ms%s) |', group($rate), sprintf('%.1f', (stat_of($load, $s->[0], 'round_p99_us') // 0) / 1000),
                defined $cpu_msg ? sprintf('; %s us', group($cpu_msg)) : '');
        }
        $md .= "\n";
    }
    $md .= "\n";
}

# --- idle ----------------------------------------------------------------------------------
my @idle = loads_of('idle');
for my $load (@idle) {
    my ($n) = $load =~ /(\d+)$/;
    $md .= "## " . group($n) . " idle connections on one process\n\n| server | accepted and greeted in | RSS per connection | answers afterwards |\n|---|---|---|---|\n";
    for my $s (present($load)) {
        $md .= sprintf("| %s | %.2f s | %s bytes | %s |\n", $s->[1], stat_of($load, $s->[0], 'accept_seconds') // 0,
            group(stat_of($load, $s->[0], 'bytes_per_connection')),
            join(',', map { $_->{answers} // '?' } @{ $runs{$load}{$s->[0]} }));
    }
    $md .= "\n";
}

# --- big rooms -----------------------------------------------------------------------------
my @joins = (loads_of('join'), loads_of('joindeep'));
if (@joins) {
    $md .= "## Join storm: N chat clients connect at once\n\n"
         . "Every newcomer is welcomed and announced to everyone already there (N(N-1)/2 announcements). "
         . "quiet: every announcement arrived. Lost to the accept queue: the kernel's ListenOverflows + "
         . "ListenDrops during the storm (a dropped handshake is retried after 1 s, 2 s, 4 s...: its client waits). "
         . "joindeep: the same in a network namespace with net.core.somaxconn = tcp_max_syn_backlog = backlog = 16384.\n\n"
         . "| load | server | welcomed | all welcomed | quiet | welcome p99 | lost to the accept queue | server CPU | vs raw epoll |\n"
         . "|---|---|---|---|---|---|---|---|---|\n";
    for my $load (@joins) {
        my $raw_cpu = stat_of($load, 'raw-epoll', 'server_cpu_s');
        for my $s (present($load)) {
            my $r = $runs{$load}{$s->[0]}[0];
            my $cpu = stat_of($load, $s->[0], 'server_cpu_s');
            $md .= sprintf("| %s | %s | %s of %s | %s | %.2f s | %s ms | %s | %.2f s | %s |\n", $load, $s->[1],
                group($r->{welcomed}), group($r->{clients}),
                ($r->{complete} // '') eq 'yes' || $r->{welcomed} == $r->{clients} ? sprintf('%.2f s', $r->{all_welcomed_s}) : 'never',
                $r->{quiet_s} // 0, group($r->{welcome_p99_ms}), group($r->{accept_queue_drops}), $cpu // 0,
                show_ratio(ratio($cpu, $raw_cpu)));
        }
    }
    $md .= "\n";
}
my @broadcasts = loads_of('broadcast');
if (@broadcasts) {
    $md .= "## Broadcast in a big room: 10 senders, every client gets every message\n\n"
         . "| load | server | rounds | round p50 | round p99 | deliveries/s | server CPU per round |\n|---|---|---|---|---|---|---|\n";
    for my $load (@broadcasts) {
        for my $s (present($load)) {
            $md .= sprintf("| %s | %s | %s | %.1f ms | %.1f ms | %s | %.1f ms |\n", $load, $s->[1],
                group(stat_of($load, $s->[0], 'rounds')), (stat_of($load, $s->[0], 'round_p50_us') // 0) / 1000,
                (stat_of($load, $s->[0], 'round_p99_us') // 0) / 1000, group(stat_of($load, $s->[0], 'deliveries_per_s')),
                stat_of($load, $s->[0], 'server_cpu_ms_per_round') // 0);
        }
    }
    $md .= "\nPublished anchor: websocketpp (Asio), broadcast p95 392 ms at 10,000 clients (hashrocket/websocket-shootout round 2).\n\n";
}
for my $load (loads_of('idlelimit')) {
    my ($n) = $load =~ /(\d+)$/;
    my $r = $runs{$load}{'ns-multiplex'}[0] or next;
    $md .= "## Past the descriptor limit: " . group($n) . " clients, a server allowed " . group($n / 2) . " descriptors\n\n"
         . sprintf("netserver multiplex greeted %s clients within the run's 20 s; a probe client %s answered "
                 . "(the rest wait in the accept queue until a descriptor frees: accepting pauses, logged once).\n\n",
                   group($r->{connections}), ($r->{answers} // '') eq 'yes' ? 'was' : 'was not');
}
if (grep { $runs{$_}{'ns-before'} } keys %runs) {
    $md .= "## Before and after (the baseline revision built the same way, same run)\n\n"
         . "Medians, with the lowest and highest run in brackets; the ratio is of the medians.\n\n"
         . "| load | server | metric | before | after | after / before |\n|---|---|---|---|---|---|\n";
    for my $load (@echo, @chat, @joins) {
        my @metrics = $load =~ /^echo/ ? (['rps', 'round trips/s'], ['server_cpu_us_per_request', 'server CPU us per request'])
                    : $load =~ /^chat/ ? (['deliveries_per_s', 'deliveries/s'], ['round_p99_us', 'round p99 us'], ['server_cpu_us_per_message', 'server CPU us per message'])
                    : (['server_cpu_s', 'server CPU s'], ['quiet_s', 'seconds until quiet']);
        for my $pair (['ns-multiplex', 'ns-before', 'multiplex'], ['ns-prefork', 'ns-prefork-before', 'prefork']) {
            my ($after_name, $before_name, $shown) = @$pair;
            next unless $runs{$load}{$before_name} && $runs{$load}{$after_name};
            for my $m (@metrics) {
                my ($b, $a) = (stat_of($load, $before_name, $m->[0]), stat_of($load, $after_name, $m->[0]));
                $md .= sprintf("| %s | %s | %s | %s | %s | %s |\n", $load, $shown, $m->[1], range_of($load, $before_name, $m->[0]),
                    range_of($load, $after_name, $m->[0]), show_ratio(ratio($a, $b)));
            }
        }
    }
    $md .= "\n";
}

# --- ratios and targets --------------------------------------------------------------------
my @targets;
sub target {
    my ($what, $value, $goal, $higher_is_better, $format) = @_;
    my $met = defined $value ? ($higher_is_better ? $value >= $goal : $value <= $goal) : 0;
    push @targets, sprintf('| %s | %s | %s |', $what, defined $value ? sprintf($format, $value) : 'not measured', $met ? 'met' : '**missed**');
}
target('Multiplex echo, 50 conn.: >= 3x Perl Net::Server::Multiplex',
    ratio(stat_of('echo-50', 'ns-multiplex', 'rps'), stat_of('echo-50', 'perl-multiplex', 'rps')), 3, 1, '%.1fx');
target('Multiplex echo, 50 conn.: >= 0.8x raw epoll',
    ratio(stat_of('echo-50', 'ns-multiplex', 'rps'), stat_of('echo-50', 'raw-epoll', 'rps')), 0.8, 1, '%.2fx');
target('Multiplex chat, 100 clients: >= 5x the tutorial\'s Perl chat server',
    ratio(stat_of('chat-100', 'ns-multiplex', 'deliveries_per_s'), stat_of('chat-100', 'perl-multiplex', 'deliveries_per_s')), 5, 1, '%.1fx');
target('Multiplex chat, 100 clients: >= 0.9x raw epoll',
    ratio(stat_of('chat-100', 'ns-multiplex', 'deliveries_per_s'), stat_of('chat-100', 'raw-epoll', 'deliveries_per_s')), 0.9, 1, '%.2fx');
target('PreFork echo, 50 conn.: >= 2x Perl Net::Server::PreFork',
    ratio(stat_of('echo-50', 'ns-prefork', 'rps'), stat_of('echo-50', 'perl-prefork', 'rps')), 2, 1, '%.2fx');
target('Multiplex echo, 500 conn.: 2 workers / 1 (2 cores shared with the load generator)',
    ratio(stat_of('echo-500', 'ns-workers', 'rps'), stat_of('echo-500', 'ns-multiplex', 'rps')), 1, 1, '%.2fx');
target('Fork connections/s: >= 2x Perl Net::Server::Fork',
    ratio(stat_of('connect-10', 'ns-fork', 'connections_per_s'), stat_of('connect-10', 'perl-fork', 'connections_per_s')), 2, 1, '%.2fx');
target('2 workers, 1,000 clients connecting at once: the busiest holds <= 60%',
    stat_of('spread-1000', 'ns-workers', 'busiest_pid_percent'), 60, 0, '%.1f%%');
my $floor = ratio(stat_of('echo-50', 'raw-prefork', 'rps'), stat_of('echo-50', 'perl-prefork', 'rps'));
push @targets, sprintf('| (for scale) raw prefork, the least a process-per-client server can do, / Perl PreFork | %s | |',
    show_ratio($floor)) if defined $floor;
for my $load (@idle) {
    my ($n) = $load =~ /(\d+)$/;
    target(group($n) . ' idle connections on one Multiplex process: <= 4 KiB RSS each',
        stat_of($load, 'ns-multiplex', 'bytes_per_connection'), 4096, 0, '%.0f bytes');
    target(group($n) . ' idle connections accepted in < 2 s', stat_of($load, 'ns-multiplex', 'accept_seconds'), 2, 0, '%.2f s');
}
for my $n (5000, 10000) {
    for my $load ("join-$n", "joindeep-$n") {
        next unless $runs{$load};
        target("Join storm of " . group($n) . " ($load): server CPU <= 1.5x raw epoll",
            ratio(stat_of($load, 'ns-multiplex', 'server_cpu_s'), stat_of($load, 'raw-epoll', 'server_cpu_s')), 1.5, 0, '%.2fx');
        target("Join storm of " . group($n) . " ($load): every client welcomed",
            stat_of($load, 'ns-multiplex', 'welcomed'), $n, 1, '%.0f');
    }
}
target('Join storm of 10,000 with backlog and somaxconn 16384: no connection lost to the accept queue',
    stat_of('joindeep-10000', 'ns-multiplex', 'accept_queue_drops'), 0, 0, '%.0f') if $runs{'joindeep-10000'};
if ($runs{'broadcast-10000'}) {
    my $p99 = stat_of('broadcast-10000', 'ns-multiplex', 'round_p99_us');
    target('Broadcast to 10,000, 10 senders: round p99 <= 1.2x raw epoll',
        ratio($p99, stat_of('broadcast-10000', 'raw-epoll', 'round_p99_us')), 1.2, 0, '%.2fx');
    target('Broadcast to 10,000, 10 senders: round p99 well under websocketpp\'s 392 ms (p95)',
        defined $p99 ? $p99 / 1000 : undef, 392 / 2, 0, '%.1f ms');
}
for my $load (grep { (/(\d+)$/)[0] >= 19000 } @idle) {
    target(group(($load =~ /(\d+)$/)[0]) . ' idle clients in one process (20,000 minus room for descriptors of its own): <= 2 KiB each',
        stat_of($load, 'ns-multiplex', 'bytes_per_connection'), 2048, 0, '%.0f bytes');
}
my $fanout_cpu = stat_of('chat-1000', 'ns-multiplex', 'server_cpu_us_per_message');
target("Multiplex chat fan-out to 1,000 clients: well under 1 ms server CPU per message", $fanout_cpu, 1000, 0, "%.0f us")
    if defined $fanout_cpu;
# A before/after run (--only compare) measures no peers: no targets and ratios to speak of.
my $peers = grep { $runs{$_}{'raw-epoll'} || $runs{$_}{'perl-multiplex'} } keys %runs;
if ($peers) {
$md .= "## Targets (ratios from this run)\n\n| target | measured | |\n|---|---|---|\n" . join("\n", @targets) . "\n\n";

$md .= "## Ratios (this run)\n\n| load | multiplex / Perl Multiplex | multiplex / raw epoll | prefork / Perl PreFork | prefork / raw prefork | single / Perl Single |\n|---|---|---|---|---|---|\n";
for my $load (@echo, @chat, ($runs{'connect-10'} ? ('connect-10') : ())) {
    my $metric = $load =~ /^echo/ ? 'rps' : $load =~ /^chat/ ? 'deliveries_per_s' : 'connections_per_s';
    my $mux = stat_of($load, 'ns-multiplex', $metric);
    my $prefork = stat_of($load, 'ns-prefork', $metric);
    $md .= sprintf("| %s | %s | %s | %s | %s | %s |\n", $load,
        show_ratio(ratio($mux, stat_of($load, 'perl-multiplex', $metric))), show_ratio(ratio($mux, stat_of($load, 'raw-epoll', $metric))),
        show_ratio(ratio($prefork, stat_of($load, 'perl-prefork', $metric))), show_ratio(ratio($prefork, stat_of($load, 'raw-prefork', $metric))),
        show_ratio(ratio(stat_of($load, 'ns-single', $metric), stat_of($load, 'perl-single', $metric))));
}
$md .= "\n![benchmark chart]($name.png)\n";
}

open my $out, '>', "$dir/$name.md" or die "$dir/$name.md: $!\n";
print $out $md;
close $out;

# --- chart ---------------------------------------------------------------------------------
my @panels = (['echo-50', 'rps', 'echo, 50 connections: round trips/s'],
              ['chat-100', 'deliveries_per_s', 'chat, 100 clients: deliveries/s'],
              ['connect-10', 'connections_per_s', 'new connections/s']);
@panels = grep { $runs{$_->[0]} } @panels;
exit 0 unless @panels;
my %short = ('raw-epoll' => 'raw epoll', 'raw-prefork' => 'raw prefork', 'ns-multiplex' => 'multiplex', 'ns-prefork' => 'prefork', 'ns-single' => 'single',
             'ns-workers' => '2 workers', 'ns-fork' => 'fork', 'perl-fork' => 'Perl Fork',
             'perl-multiplex' => 'Perl Multiplex', 'perl-prefork' => 'Perl PreFork', 'perl-single' => 'Perl Single', poe => 'POE');
my %colour = ('raw-epoll' => 0x909090, 'raw-prefork' => 0x909090, poe => 0xd08030);
my $gp = "set terminal pngcairo size " . (420 * @panels) . ",460 font ',10'\nset output '$dir/$name.png'\n"
       . "set multiplot layout 1," . scalar(@panels) . " title 'netserver (blue), Perl (orange), raw epoll (grey); log scale'\n"
       . "set style fill solid 0.85 noborder\nset boxwidth 0.7\nset logscale y\nset grid ytics\n"
       . "set xtics rotate by -45 scale 0 nomirror\nset bmargin 7\nset key off\nset format y '%.0s%c'\n";
for my $panel (@panels) {
    my ($load, $metric, $title) = @$panel;
    my $data = "$dir/$load.dat";
    open my $d, '>', $data or die "$data: $!\n";
    for my $s (present($load)) {
        my $v = stat_of($load, $s->[0], $metric);
        my $f = stat_of($load, $s->[0], 'delivered_fraction');
        next if !defined $v || $v <= 0 || (defined $f && $f < 1);
        my $rgb = $colour{$s->[0]} // ($s->[0] =~ /^perl/ ? 0xd08030 : 0x3070b0);
        print $d "\"$short{$s->[0]}\" $v $rgb\n";
    }
    close $d;
    $gp .= "set title '$title'\nplot '$data' using 0:2:3:xtic(1) with boxes linecolor rgb variable\n";
}
$gp .= "unset multiplot\n";
open my $g, '|-', 'gnuplot' or die "gnuplot: $!\n";
print $g $gp;
close $g or warn "gnuplot failed\n";
unlink map { "$dir/$_->[0].dat" } @panels;
