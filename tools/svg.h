/* tools/svg.h: a growing text buffer and a hand-written SVG line-chart writer, for the
 * reports of the dpsgd commands (`dpsgd bench --plot`). Not part of the library. */
#ifndef DP_SVG_H
#define DP_SVG_H
#include <stddef.h>

/* ---- text buffer: printf-style appends; on allocation failure it stays failed (ok = 0) ---- */
typedef struct {
    char *s; /* NUL-terminated text (NULL until the first append) */
    size_t len, cap;
    int failed; /* an allocation failed: the text is incomplete */
} dp_strbuf;

void dp_strbuf_printf(dp_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* append s with the characters special in XML (& < > " ') escaped */
void dp_strbuf_xml(dp_strbuf *b, const char *s);
/* append s as a JSON string literal (quotes included) */
void dp_strbuf_json_str(dp_strbuf *b, const char *s);
void dp_strbuf_free(dp_strbuf *b);

/* ---- line charts ----
 * A series is one line of points (x[i], y[i]); a point whose y is not finite or <= 0 on a log
 * axis is not drawn; a point with mark[i] set is drawn as a cross at the top edge of the plot
 * with the text mark_text (e.g. "OOM") instead, at its x. */
typedef struct {
    const char *name; /* legend text */
    int n;
    const double *x, *y;
    const int *mark; /* [n] or NULL */
    int style;       /* colour and marker: the same style looks the same in every chart */
} dp_svg_series;

typedef struct {
    const char *title;           /* above the plot */
    const char *xlabel, *ylabel; /* axis titles, with units */
    int logx, logy;              /* logarithmic axes */
    const double *xticks;        /* where to put x tick labels (e.g. the batch sizes); NULL: automatic */
    int nxticks;
    double hline; /* a dashed horizontal reference line at this y (0: none) */
    const char *hline_label;
    const char *mark_text; /* text beside marked points ["OOM"] */
    const dp_svg_series *series;
    int nseries;
} dp_svg_chart;

/* Appends a complete SVG document to b: a title line, a note line (may be NULL), then the
 * charts side by side (ncols per row), one legend (the first chart's series). */
void dp_svg_charts(dp_strbuf *b, const char *title, const char *note, const dp_svg_chart *charts, int ncharts,
                   int ncols);
#endif
