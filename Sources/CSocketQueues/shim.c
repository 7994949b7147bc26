// ioctl is variadic, which Swift cannot call: these two non-variadic wrappers are the whole shim.
#include "CSocketQueues.h"

#include <errno.h>

#ifdef __linux__
#include <linux/sockios.h>
#include <sys/ioctl.h>

static int rs_queue_ioctl(int fd, unsigned long request, int *bytes) {
    return ioctl(fd, request, bytes) == 0 ? 0 : errno;
}

int rs_socket_unread_bytes(int fd, int *bytes) { return rs_queue_ioctl(fd, SIOCINQ, bytes); }
int rs_socket_unsent_bytes(int fd, int *bytes) { return rs_queue_ioctl(fd, SIOCOUTQ, bytes); }
#else
int rs_socket_unread_bytes(int fd, int *bytes) { (void)fd; *bytes = 0; return ENOTSUP; }
int rs_socket_unsent_bytes(int fd, int *bytes) { (void)fd; *bytes = 0; return ENOTSUP; }
#endif
