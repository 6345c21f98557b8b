#!/usr/bin/perl
# Turns `scripts/bench --sequential`'s result lines into bench/results/sequential.md: per load,
# the median round trips/s and server CPU per round trip of each echo style and their ratio.
use strict;
use warnings;

my (%echo, %idle);
while (<>) {
  my %f = map { split /=/, $_, 2 } grep { /=/ } split ' ';
  next if ($f{failed} // '') eq 'yes';
  if ($f{load} =~ /^echo-(\d+)$/) {
    push @{ $echo{$1}{$f{server}}{rps} }, $f{rps};
    push @{ $echo{$1}{$f{server}}{cpu} }, $f{server_cpu_us_per_request};
  } elsif ($f{load} =~ /^idle/) {
    $idle{$f{server}} = $f{bytes_per_connection};
  }
}

sub median { my @v = sort { $a <=> $b } @_; return @v ? $v[$#v / 2] : 0 }

my ($cb, $seq) = ('ns-multiplex', 'ns-multiplex-sequential');
my @runs = map { scalar @{ $echo{$_}{$cb}{rps} // [] } } keys %echo;
printf "# Sequential (Conversation) vs callback echo under Multiplex\n\n";
printf "Measured %s on %s; medians of %d interleaved run(s) of each. The machine was shared with\n",
  scalar(gmtime), `uname -sr` =~ s/\n//r, $runs[0] // 0;
print "other work while measuring, so absolute figures are noisy: compare the ratios (same run, same\n";
print "machine) and the server CPU per round trip, which depends least on the load around it.\n\n";
print "| connections | callbacks rt/s | sequential rt/s | ratio | callbacks CPU/rt | sequential CPU/rt | CPU ratio |\n";
print "|---|---|---|---|---|---|---|\n";
for my $n (sort { $a <=> $b } keys %echo) {
  my ($r1, $r2) = (median(@{ $echo{$n}{$cb}{rps} }), median(@{ $echo{$n}{$seq}{rps} }));
  my ($c1, $c2) = (median(@{ $echo{$n}{$cb}{cpu} }), median(@{ $echo{$n}{$seq}{cpu} }));
  printf "| %d | %.0f | %.0f | %.2fx | %.2f us | %.2f us | %.2fx |\n", $n, $r1, $r2, $r1 ? $r2 / $r1 : 0, $c1, $c2,
    $c1 ? $c2 / $c1 : 0;
}
print "\nMemory per idle session (10,000 connections that got their banner; server RSS growth / connections):\n\n";
printf "| style | bytes per session |\n|---|---|\n";
printf "| callbacks | %s |\n| sequential | %s |\n", $idle{$cb} // 'n/a', $idle{$seq} // 'n/a';
