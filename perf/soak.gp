# SPDX-License-Identifier: MIT
#
# The plot of perf/soak.sh: the server's RSS (top) and its fd count, its
# established sockets and the load tool's open connections (bottom) against
# time, from soak.tsv. soak.sh sets tsv, png, rss_m1 (RSS after the first
# minute, kB), fd0 (the fd baseline), conns and title_text with -e.
set terminal pngcairo size 1100,760 font "Liberation Sans,11"
set output png
set datafile separator "\t"
set key autotitle columnhead
set grid
set multiplot layout 2,1 title title_text
set xlabel "minutes"
set ylabel "server RSS (MB)"
set key bottom right
set yrange [0:*]
plot tsv using ($1/60):($3/1024) with linespoints pt 7 ps 0.4 lw 2 \
        title "RSS", \
     rss_m1/1024.0 with lines dt 2 lc rgb "#808080" title "RSS after minute 1", \
     1.05*rss_m1/1024.0 with lines dt 3 lc rgb "#c00000" title "+5 % (target)"
set ylabel "count"
set yrange [0:conns*1.1]
set key below horizontal
plot tsv using ($1/60):4 with lines lw 2 title "server fds", \
     tsv using ($1/60):5 with lines lw 1 title "established (ss, server side)", \
     tsv using ($1/60):6 with lines lw 1 dt 2 title "open (load tool)", \
     fd0 with lines dt 3 lc rgb "#808080" title "fd baseline"
unset multiplot
