"""What the scenarios share: server processes, closed-loop load through pyserver-perf,
CPU per request, in-process timing, alternating rounds and their medians, report tables."""
