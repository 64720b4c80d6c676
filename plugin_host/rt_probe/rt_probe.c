/* The interposed functions of rt_probe.h: each counts itself, then calls the real one. */
#define _GNU_SOURCE
#include "rt_probe.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *const rt_probe_names[RT_PROBE_N] = {
    "malloc", "calloc", "realloc", "free", "memalign", "pthread_mutex_lock",
    "pthread_mutex_trylock", "pthread_cond_wait", "sem_wait", "write", "read", "send", "sendto",
    "recv", "recvfrom", "close", "shm_open", "mmap", "munmap", "nanosleep", "clock_nanosleep",
    "usleep", "sched_yield", "vfprintf", "fputs"};

__thread int rt_probe_in_rt;
unsigned long rt_probe_counts[RT_PROBE_N];

#define NOTE(k) do { if (rt_probe_in_rt) ++rt_probe_counts[k]; } while (0)

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n) { NOTE(K_MALLOC); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { NOTE(K_CALLOC); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { NOTE(K_REALLOC); return __libc_realloc(p, n); }
void free(void *p) { NOTE(K_FREE); __libc_free(p); }
int posix_memalign(void **p, size_t a, size_t n)
{
    NOTE(K_MEMALIGN);
    *p = __libc_memalign(a, n);
    return *p ? 0 : ENOMEM;
}
void *aligned_alloc(size_t a, size_t n) { NOTE(K_MEMALIGN); return __libc_memalign(a, n); }

/* The real ones, looked up once by rt_probe_resolve() before anything runs. */
static struct {
    int (*mutex_lock)(pthread_mutex_t *);
    int (*mutex_trylock)(pthread_mutex_t *);
    int (*cond_wait)(pthread_cond_t *, pthread_mutex_t *);
    int (*sem_wait)(sem_t *);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    int (*close)(int);
    int (*shm_open)(const char *, int, mode_t);
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    int (*nanosleep)(const struct timespec *, struct timespec *);
    int (*clock_nanosleep)(clockid_t, int, const struct timespec *, struct timespec *);
    int (*usleep)(useconds_t);
    int (*sched_yield)(void);
    int (*vfprintf)(FILE *, const char *, va_list);
    int (*fputs)(const char *, FILE *);
} real;

void rt_probe_resolve(void)
{
#define R(field, sym) *(void **)(&real.field) = dlsym(RTLD_NEXT, sym)
    R(mutex_lock, "pthread_mutex_lock");
    R(mutex_trylock, "pthread_mutex_trylock");
    R(cond_wait, "pthread_cond_wait");
    R(sem_wait, "sem_wait");
    R(write, "write");
    R(read, "read");
    R(send, "send");
    R(sendto, "sendto");
    R(recv, "recv");
    R(recvfrom, "recvfrom");
    R(close, "close");
    R(shm_open, "shm_open");
    R(mmap, "mmap");
    R(munmap, "munmap");
    R(nanosleep, "nanosleep");
    R(clock_nanosleep, "clock_nanosleep");
    R(usleep, "usleep");
    R(sched_yield, "sched_yield");
    R(vfprintf, "vfprintf");
    R(fputs, "fputs");
#undef R
}

int pthread_mutex_lock(pthread_mutex_t *m) { NOTE(K_MUTEX_LOCK); return real.mutex_lock(m); }
int pthread_mutex_trylock(pthread_mutex_t *m) { NOTE(K_MUTEX_TRYLOCK); return real.mutex_trylock(m); }
int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) { NOTE(K_COND_WAIT); return real.cond_wait(c, m); }
int sem_wait(sem_t *s) { NOTE(K_SEM_WAIT); return real.sem_wait(s); }
ssize_t write(int fd, const void *b, size_t n) { NOTE(K_WRITE); return real.write(fd, b, n); }
ssize_t read(int fd, void *b, size_t n) { NOTE(K_READ); return real.read(fd, b, n); }
ssize_t send(int fd, const void *b, size_t n, int fl) { NOTE(K_SEND); return real.send(fd, b, n, fl); }
ssize_t sendto(int fd, const void *b, size_t n, int fl, const struct sockaddr *a, socklen_t al)
{
    NOTE(K_SENDTO);
    return real.sendto(fd, b, n, fl, a, al);
}
ssize_t recv(int fd, void *b, size_t n, int fl) { NOTE(K_RECV); return real.recv(fd, b, n, fl); }
ssize_t recvfrom(int fd, void *b, size_t n, int fl, struct sockaddr *a, socklen_t *al)
{
    NOTE(K_RECVFROM);
    return real.recvfrom(fd, b, n, fl, a, al);
}
int close(int fd) { NOTE(K_CLOSE); return real.close(fd); }
int shm_open(const char *name, int flags, mode_t mode) { NOTE(K_SHM_OPEN); return real.shm_open(name, flags, mode); }
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
    NOTE(K_MMAP);
    return real.mmap(a, n, prot, flags, fd, off);
}
int munmap(void *a, size_t n) { NOTE(K_MUNMAP); return real.munmap(a, n); }
int nanosleep(const struct timespec *t, struct timespec *rem) { NOTE(K_NANOSLEEP); return real.nanosleep(t, rem); }
int clock_nanosleep(clockid_t c, int fl, const struct timespec *t, struct timespec *rem)
{
    NOTE(K_CLOCK_NANOSLEEP);
    return real.clock_nanosleep(c, fl, t, rem);
}
int usleep(useconds_t us) { NOTE(K_USLEEP); return real.usleep(us); }
int sched_yield(void) { NOTE(K_SCHED_YIELD); return real.sched_yield(); }
int vfprintf(FILE *f, const char *fmt, va_list ap) { NOTE(K_VFPRINTF); return real.vfprintf(f, fmt, ap); }
int fprintf(FILE *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(f, fmt, ap);
    va_end(ap);
    return n;
}
int fputs(const char *s, FILE *f) { NOTE(K_FPUTS); return real.fputs(s, f); }
