/* recipes.c: `dpsgd train --recipe NAME`, published recipes as sets of flag defaults (see
 * cli.h). Each field is a default: a flag given on the command line overrides it. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const dp_cli_recipe RECIPES[] = {
    {"cnn", "Tramer & Boneh (2021) end-to-end CNN: 26,010-parameter tanh CNN, SGD lr 4 momentum 0.9, C 0.1, "
            "batch 2048, 40 epochs (the default)",
     "cnn", 0, 0, 0, 4.0, 0.9, 0.1, 2048, 40, 0, 0, 0, 0, 0, 0},
    {"scatternet", "Tramer & Boneh (2021) ScatterNet: scattering transform J 2, 8 angles (81 x 7 x 7 features, "
                   "a fixed public transform), GroupNorm with 27 groups, linear classifier on the "
                   "features preconditioned by their private second moments (--precondition 10); SGD lr 6 (16 with "
                   "--precondition 0) momentum 0.9, C 0.1, batch 8192, 60 epochs (40 at --epsilon <= 2, 20 at <= 1), "
                   "an average of the weights (--ema 0.99); pixels in [0, 1] (no --normalize)",
     "groupnorm(27) flatten linear(10)", 2, 8, 1, 6.0, 0.9, 0.1, 8192, 60, 0.99, 20, 40, 10.0, 27, 16.0},
    {"transformer", "BERT-like encoder on token data (docs/transformer.md): SGD lr 0.5 momentum 0.9, C 1, batch 512, "
                    "10 epochs; the synthetic order task without data flags",
     "transformer", 0, 0, 0, 0.5, 0.9, 1.0, 512, 10, 0, 0, 0, 0, 0, 0},
};
enum { NRECIPES = sizeof RECIPES / sizeof RECIPES[0] };

const dp_cli_recipe *dp_cli_recipe_find(const char *name) {
    for (int i = 0; i < NRECIPES; i++)
        if (!strcmp(RECIPES[i].name, name)) return &RECIPES[i];
    return NULL;
}

/* each recipe's summary, word-wrapped to the help's width under its name */
void dp_cli_recipes_usage(FILE *f) {
    enum { INDENT = 26, WIDTH = 94 };
    for (int i = 0; i < NRECIPES; i++) {
        fprintf(f, "    %-*s", INDENT - 4, RECIPES[i].name);
        int col = INDENT;
        for (const char *w = RECIPES[i].summary; *w;) {
            int len = (int)strcspn(w, " ");
            if (col > INDENT && col + 1 + len > WIDTH) {
                fprintf(f, "\n%*s", INDENT, "");
                col = INDENT;
            } else if (col > INDENT) {
                fputc(' ', f);
                col++;
            }
            fprintf(f, "%.*s", len, w);
            col += len;
            w += len;
            while (*w == ' ') w++;
        }
        fputc('\n', f);
    }
}

const dp_cli_recipe *dp_cli_recipe_pick(int argc, char **argv) {
    const char *name = NULL, *model = NULL;
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--recipe")) name = argv[i + 1];
        else if (!strcmp(argv[i], "--model")) model = argv[i + 1];
    }
    if (!name) /* a built-in model brings its own recipe; a spec or mlp trains with the default's */
        return dp_cli_recipe_find(model && !strcmp(model, "transformer") ? "transformer" : "cnn");
    const dp_cli_recipe *r = dp_cli_recipe_find(name);
    if (!r) {
        fprintf(stderr, "%s: --recipe %s: unknown; the recipes are:\n", dp_cli_prog, name);
        dp_cli_recipes_usage(stderr);
    }
    return r;
}
