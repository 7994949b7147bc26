#ifndef C_MICRO_HTTPD_SHIM_H
#define C_MICRO_HTTPD_SHIM_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <microhttpd.h>
#include <gnutls/gnutls.h>

// libmicrohttpd's messages are printf formats with a va_list, which Swift cannot take: they are
// formatted here and handed to `message_handler` as text, with the daemon's `context`.
typedef void (*rs_mhd_message_handler)(void *context, const char *message);

struct rs_mhd_message_sink {
    rs_mhd_message_handler handler;
    void *context;
};

static void rs_mhd_format_message(void *sink, const char *format, va_list arguments) {
    char message[512];
    vsnprintf(message, sizeof message, format, arguments);
    const struct rs_mhd_message_sink *target = (const struct rs_mhd_message_sink *)sink;
    target->handler(target->context, message);
}

// MHD_start_daemon and MHD_get_daemon_info are variadic, which Swift cannot call: options travel
// as an MHD_OPTION_ARRAY instead. The connection and request-completed notifiers get `context` too;
// `messages` must live as long as the daemon.
static inline struct MHD_Daemon *rs_mhd_start(unsigned int flags, MHD_AccessHandlerCallback handler,
                                              MHD_NotifyConnectionCallback connection_notifier,
                                              MHD_RequestCompletedCallback completion_notifier, void *context,
                                              struct rs_mhd_message_sink *messages,
                                              struct MHD_OptionItem *options) {
    // The logger goes first: messages about the options after it go through it too.
    return MHD_start_daemon(flags, 0, NULL, NULL, handler, context, MHD_OPTION_EXTERNAL_LOGGER,
                            rs_mhd_format_message, messages, MHD_OPTION_NOTIFY_CONNECTION, connection_notifier,
                            context, MHD_OPTION_NOTIFY_COMPLETED, completion_notifier, context, MHD_OPTION_ARRAY,
                            options, MHD_OPTION_END);
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
