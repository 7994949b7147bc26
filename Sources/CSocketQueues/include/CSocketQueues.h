#ifndef C_SOCKET_QUEUES_H
#define C_SOCKET_QUEUES_H

/// Bytes received on a socket and not yet read by the application (ioctl SIOCINQ).
/// Returns 0 on success, or an errno value.
int rs_socket_unread_bytes(int fd, int *bytes);

/// Bytes written to a socket and not yet acknowledged by the peer (ioctl SIOCOUTQ).
/// Returns 0 on success, or an errno value.
int rs_socket_unsent_bytes(int fd, int *bytes);

#endif
