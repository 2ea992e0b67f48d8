/*
 * push -- pushes `keydrift check` results to a Prometheus Pushgateway.
 */
#ifndef KD_PUSH_H
#define KD_PUSH_H

#include <stddef.h>

#include "config.h"

/*
 * PUTs the registry's metrics plus keydrift_check_* gauges to the gateway
 * at url (a base URL such as http://host:9091, or a full
 * .../metrics/job/NAME/... grouping URL). divergent < 0 means the pass
 * failed. Returns 0, or -1 with a reason in err.
 */
int push_check(const char *url, const struct config *cfg, long long divergent, double seconds,
               char *err, size_t errlen);

/* The grouping URL for a base URL: <base>/metrics/job/keydrift_check/instance@base64/<id>. */
char *push_url(const char *base, const char *instance);

#endif
