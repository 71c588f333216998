#ifndef SLUICE_START_CHECK_H
#define SLUICE_START_CHECK_H

/// The exit status of a `sluice` started on a CPU below the build's baseline (x86-64-v2): the
/// check runs before `main`, prints one line naming the missing instruction set, and exits.
#define SLUICE_EXIT_CPU_BELOW_BASELINE 1

#endif
