/*
 * webhook -- JSON notifications to an HTTP endpoint (libcurl), never
 * blocking the agent.
 *
 * Events are queued (bounded; the oldest dropped and counted when full) and
 * POSTed by one thread with a timeout, retried with exponential backoff.
 * Events of the same kind arriving close together are batched into one POST:
 * {"events":[{"kind":"divergence_confirmed","time_ms":...,"data":{...}},...]}.
 * When no URL is configured every call is a no-op.
 */
#ifndef KD_WEBHOOK_H
#define KD_WEBHOOK_H

#include <jansson.h>

/* Starts the sender for url (NULL or "" disables). Returns 0, -1 on failure. */
int webhook_init(const char *url, long long timeout_ms);
/* Sends what is queued (bounded wait) and stops. */
void webhook_shutdown(void);
/*
 * Queues one event. kind: "divergence_confirmed", "replica_status",
 * "repair_failed", "repair_paused". Steals the reference to data.
 */
void webhook_event(const char *kind, json_t *data);

#endif
