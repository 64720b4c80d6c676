/*
 * rt_probe: counts the calls a plugin makes while a test host's audio context is inside it
 * (allocation, locks, waits, I/O, sockets, shared-memory and mapping calls, sleeps, printing).
 * A test host links rt_probe.c into its executable with -rdynamic and -fno-builtin: these
 * definitions then interpose on the dlopened plugin's calls. Set rt_probe_in_rt around the
 * calls to check; a probe around a call that must allocate (instantiate) proves it works.
 */
#ifndef RT_PROBE_H
#define RT_PROBE_H

enum {
    K_MALLOC, K_CALLOC, K_REALLOC, K_FREE, K_MEMALIGN, K_MUTEX_LOCK, K_MUTEX_TRYLOCK,
    K_COND_WAIT, K_SEM_WAIT, K_WRITE, K_READ, K_SEND, K_SENDTO, K_RECV, K_RECVFROM, K_CLOSE,
    K_SHM_OPEN, K_MMAP, K_MUNMAP, K_NANOSLEEP, K_CLOCK_NANOSLEEP, K_USLEEP, K_SCHED_YIELD,
    K_VFPRINTF, K_FPUTS, RT_PROBE_N
};

extern const char *const rt_probe_names[RT_PROBE_N];
extern __thread int rt_probe_in_rt;         /* set while the audio context is inside the plugin */
extern unsigned long rt_probe_counts[RT_PROBE_N]; /* calls seen while rt_probe_in_rt */

/* Look up the real functions; call once, first thing in main(). */
void rt_probe_resolve(void);

#endif
