/* tools/cli.h: what the dpsgd command's files share. Each command lives in its own file
 * (tools/cmd_<name>.c) and exports `int dp_cmd_<name>(int argc, char **argv)` (argv without
 * the program and command names), returning the exit status: 0 success, 1 failure at run
 * time, 2 bad usage. Commands are listed in tools/dpsgd.c. */
#ifndef DP_CLI_H
#define DP_CLI_H
#include "dpsgd.h"

extern const char *dp_cli_prog; /* "dpsgd" */

/* "dpsgd: <what>" on stderr; returns 2 (bad usage) */
int dp_cli_die(const char *what);
/* "dpsgd: error: <dp_last_error()>" on stderr; returns 1 */
int dp_cli_fail(dp_status st);
/* parse a flag's value; on failure print "<flag> <value>: <reason>" and return 0 */
int dp_cli_parse_double(const char *flag, const char *v, double *out);
int dp_cli_parse_long(const char *flag, const char *v, long lo, long hi, long *out);
/* write text to path atomically (temp file in the same directory, fsync, rename); on failure
 * print a message naming `flag` and path, leave nothing behind, return 0 */
int dp_cli_write_atomic(const char *flag, const char *path, const char *text);

int dp_cmd_train(int argc, char **argv);
void dp_cmd_train_usage(FILE *f);
#endif
