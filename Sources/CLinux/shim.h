// Linux headers that Swift's Glibc module does not bring in, and prototypes
// of the GNU calls it hides (declared here rather than defining _GNU_SOURCE,
// which would clash with Glibc's own view of the same headers).
#ifndef BERTH_CLINUX_SHIM_H
#define BERTH_CLINUX_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <pthread.h>
#include <signal.h>

extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
extern int pipe2(int fds[2], int flags);
extern int pthread_setname_np(pthread_t thread, const char *name);
extern ssize_t preadv2(int fd, const struct iovec *iov, int iovcnt, off_t offset, int flags);
#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008 /* <bits/uio-ext.h>, GNU only: never wait for the disk */
#endif
#endif
