/* cli.h — `coldbrew apply`, `status` and `logs`: clients of a running
 * platform's control API on 127.0.0.1:COLDBREW_API_PORT (plain HTTP/1.1,
 * one request per connection). Each returns the process exit code. */
#ifndef LOCAL_CLI_H
#define LOCAL_CLI_H

#include <jansson.h>
#include <stdio.h>

int cli_apply(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_logs(int argc, char **argv);
/* "  70% coffee-00001  current: http://current-coffee..." lines of one
 * service of the status JSON. */
void cli_print_traffic(FILE *f, json_t *svc);

#endif
