/* dpsgd: the command-line tool. Each command is in tools/cmd_<name>.c; this file lists them. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tool_setup.h"

/* Commands built in other files are declared weak: a command whose file is not part of the
 * build is simply not listed. */
#define DP_CLI_COMMANDS(X)                                                                    \
    X(train, "train a model with DP-SGD (default: the CNN on Fashion-MNIST at epsilon 3)")    \
    X(norms, "per-sample gradient norms of a model on data (to choose the clipping norm C)")   \
    X(epsilon, "the epsilon a run spends (accountants)")                                       \
    X(noise, "the noise multiplier a target epsilon needs")                                    \
    X(bench, "benchmarks: memory and time of the clipping modes")                              \
    X(audit, "empirical privacy audit of a training run")

#define DP__DECL(name, help) int dp_cmd_##name(int argc, char **argv) __attribute__((weak));
DP_CLI_COMMANDS(DP__DECL)
#undef DP__DECL

typedef struct {
    const char *name, *help;
    int (*fn)(int, char **);
} command;

static const command commands[] = {
#define DP__ROW(name, help) {#name, help, dp_cmd_##name},
    DP_CLI_COMMANDS(DP__ROW)
#undef DP__ROW
};

static void usage_main(FILE *f) {
    fprintf(f, "usage: dpsgd <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].fn) fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  help      this help; `dpsgd <command> --help` for a command's options\n");
    fprintf(f, "\nA flag's value follows it (--epochs 10) or is joined to it by '=' (--epochs=10).\n");
}

/* GNU style "--flag=value" is "--flag value": every argument after the command that starts with
 * "--" and has a '=' after a flag name is cut there in place (the '=' becomes the flag's end)
 * and its two halves are two arguments (no value of dpsgd's flags starts with "--"). Returns
 * the new argv (allocated: free it), or argv itself when there is nothing to split or no
 * memory. */
/* the values cut from "--flag=value" (pointers into argv's strings) and their flags, so that a
 * value given to a switch that takes none is reported as such (dp_cli_split_flag) */
static const char **split_values, **split_names;
static int n_split;

const char *dp_cli_split_flag(const char *arg) {
    for (int i = 0; i < n_split; i++)
        if (split_values[i] == arg) return split_names[i];
    return NULL;
}

static char **split_flags(int *argc, char **argv) {
    int extra = 0;
    for (int i = 2; i < *argc; i++)
        extra += !strncmp(argv[i], "--", 2) && argv[i][2] != '=' && strchr(argv[i] + 2, '=') != NULL;
    char **out = extra ? calloc((size_t)(*argc + extra + 1), sizeof *out) : NULL;
    split_values = extra ? calloc((size_t)extra, sizeof *split_values) : NULL;
    split_names = extra ? calloc((size_t)extra, sizeof *split_names) : NULL;
    if (!out || !split_values || !split_names) {
        free(out);
        free(split_values);
        free(split_names);
        split_values = split_names = NULL;
        return argv;
    }
    int n = 0;
    for (int i = 0; i < *argc; i++) {
        char *eq = i >= 2 && !strncmp(argv[i], "--", 2) && argv[i][2] != '=' ? strchr(argv[i] + 2, '=') : NULL;
        out[n++] = argv[i];
        if (eq) {
            *eq = '\0';
            out[n++] = eq + 1;
            split_values[n_split] = eq + 1;
            split_names[n_split++] = argv[i];
        }
    }
    *argc = n;
    return out;
}

/* The commands (and `dpsgd help CMD`) on the final argv. */
static int dispatch(int argc, char **argv) {
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (argc > 2) { /* `dpsgd help train` = `dpsgd train --help` */
            char *sub[] = {(char *)"--help", NULL};
            for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (commands[i].fn && !strcmp(argv[2], commands[i].name)) return commands[i].fn(1, sub);
        }
        usage_main(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (commands[i].fn && !strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "%s: unknown command '%s'\n", dp_cli_prog, cmd);
    usage_main(stderr);
    return 2;
}

/* the split argv while a command runs (a global: a command that exits leaves it reachable) */
char **dp_split_argv;

int main(int argc, char **argv) {
    dp_tool_setup(argv);
    char **split = split_flags(&argc, argv);
    dp_split_argv = split != argv ? split : NULL;
    const int rc = dispatch(argc, split);
    if (split != argv) free(split);
    dp_split_argv = NULL;
    free(split_values);
    free(split_names);
    split_values = split_names = NULL;
    n_split = 0;
    return rc;
}
