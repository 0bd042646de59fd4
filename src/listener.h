/*
 * listener.h - TCP and unix-socket listeners.
 */
#ifndef PGBUN_LISTENER_H
#define PGBUN_LISTENER_H

#include <stdbool.h>

#include "config.h"

/* Binds every configured address; false with *err (malloc'd) naming the address. */
bool listener_start(const struct pgbun_config *cfg, char **err) __attribute__((warn_unused_result));
/* Stops accepting and removes the unix socket file. */
void listener_stop(void);

#endif
