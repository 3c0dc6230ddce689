# SPDX-License-Identifier: MIT
#
# Plots perf/bench_library.sh's medians: for each pipe count, loop time and
# total time against the number of active pipes, one line per library, as
# PNGs in outdir. perf/bench_library.sh writes the data files and calls
#   gnuplot -e "datadir='DIR'; outdir='DIR'; pipes='1000 9980'" plot_library.gp
# Each data file (DIR/<metric>_<pipes>.dat) has a header row naming the
# libraries, then one row per active count: active, then milliseconds.

if (!exists("datadir")) datadir = "."
if (!exists("outdir")) outdir = "."
if (!exists("pipes")) pipes = "1000 9980"

set terminal pngcairo size 900,520 enhanced font "sans,10"
set logscale x
set xlabel "active pipes (-a)"
set key outside right center box
set grid xtics ytics mytics lc rgb "#dddddd"
set style data linespoints
set yrange [0:*]

# One colour and point shape per column (es 1 thread, es 2 threads,
# libevent, libev, libuv), the same in every plot.
set linetype 1 lc rgb "#1f77b4" lw 2 pt 7 ps 1.2
set linetype 2 lc rgb "#17becf" lw 2 pt 5 ps 1.2
set linetype 3 lc rgb "#d62728" lw 2 pt 9 ps 1.2
set linetype 4 lc rgb "#2ca02c" lw 2 pt 11 ps 1.2
set linetype 5 lc rgb "#ff7f0e" lw 2 pt 13 ps 1.2

do for [p in pipes] {
    do for [metric in "loop total"] {
        file = sprintf("%s/%s_%s.dat", datadir, metric, p)
        set output sprintf("%s/bench_library_%s_%s.png", outdir, metric, p)
        set title sprintf("bench.c workload, %s pipes: %s time (median)", p, \
                          metric eq "loop" ? "loop" : "total (with re-arm)")
        set ylabel sprintf("%s time per iteration (ms)", metric)
        plot for [c = 2:6] file using 1:c title columnheader(c)
        unset output
    }
}
