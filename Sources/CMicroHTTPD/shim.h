#ifndef C_MICRO_HTTPD_SHIM_H
#define C_MICRO_HTTPD_SHIM_H

#include <stdint.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <gnutls/gnutls.h>

// MHD_start_daemon and MHD_get_daemon_info are variadic, which Swift cannot call: options travel
// as an MHD_OPTION_ARRAY instead. The connection and request-completed notifiers get `context` too.
static inline struct MHD_Daemon *rs_mhd_start(unsigned int flags, MHD_AccessHandlerCallback handler,
                                              MHD_NotifyConnectionCallback connection_notifier,
                                              MHD_RequestCompletedCallback completion_notifier, void *context,
                                              struct MHD_OptionItem *options) {
    return MHD_start_daemon(flags, 0, NULL, NULL, handler, context, MHD_OPTION_NOTIFY_CONNECTION,
                            connection_notifier, context, MHD_OPTION_NOTIFY_COMPLETED, completion_notifier,
                            context, MHD_OPTION_ARRAY, options, MHD_OPTION_END);
}

static inline int rs_mhd_connection_fd(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info == NULL ? -1 : (int)info->connect_fd;
}

static inline int rs_mhd_listen_fd(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_LISTEN_FD);
    return info == NULL ? -1 : (int)info->listen_fd;
}

// The response memory mode does not import into Swift; responses always copy their body.
static inline struct MHD_Response *rs_mhd_response_copying(size_t size, const void *body) {
    return MHD_create_response_from_buffer(size, (void *)body, MHD_RESPMEM_MUST_COPY);
}

// The client certificate of an HTTPS connection: 0 when none was presented (or plain HTTP), 1 when it
// verifies against the daemon's trust set (MHD_OPTION_HTTPS_MEM_TRUST), -1 when it does not.
static inline int rs_mhd_client_certificate(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == NULL || info->tls_session == NULL) return 0;
    gnutls_session_t session = (gnutls_session_t)info->tls_session;
    unsigned int count = 0;
    if (gnutls_certificate_get_peers(session, &count) == NULL || count == 0) return 0;
    unsigned int status = 0;
    if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS || status != 0) return -1;
    return 1;
}

#endif
