/*
 * listener.h - TCP and unix-socket listeners.
 */
#ifndef PGBUN_LISTENER_H
#define PGBUN_LISTENER_H

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

/* Binds every configured address; false with *err (malloc'd) naming the address. */
bool listener_start(const struct pgbun_config *cfg, char **err) __attribute__((warn_unused_result));
/* Hands the unix socket file to the user pgbun switches to (and unix_socket_group), so it can remove it at exit. */
void listener_chown(uid_t uid, gid_t gid);
/* Every worker stops accepting on TCP; the unix socket stays (the world stopped). */
void listener_stop_tcp(void);
/* Every worker stops accepting (the world stopped), and the unix socket file goes. */
void listener_stop(void);

#endif
