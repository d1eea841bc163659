/* svg.c: a growing text buffer and a small SVG line-chart writer (see svg.h). The SVG is
 * written by hand: axes, ticks, grid, one polyline and markers per series, a legend. */
#define _POSIX_C_SOURCE 200809L
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- text buffer ---- */

static int strbuf_reserve(dp_strbuf *b, size_t extra) {
    if (b->failed) return 0;
    if (b->len + extra + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return 0;
    }
    b->s = s;
    b->cap = cap;
    return 1;
}

void dp_strbuf_printf(dp_strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if (!strbuf_reserve(b, (size_t)n)) return;
    if ((size_t)n < sizeof tmp) {
        memcpy(b->s + b->len, tmp, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void dp_strbuf_xml(dp_strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&':
            dp_strbuf_printf(b, "&amp;");
            break;
        case '<':
            dp_strbuf_printf(b, "&lt;");
            break;
        case '>':
            dp_strbuf_printf(b, "&gt;");
            break;
        case '"':
            dp_strbuf_printf(b, "&quot;");
            break;
        case '\'':
            dp_strbuf_printf(b, "&#39;");
            break;
        default:
            dp_strbuf_printf(b, "%c", *s);
        }
    }
}

void dp_strbuf_json_str(dp_strbuf *b, const char *s) {
    dp_strbuf_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            dp_strbuf_printf(b, "\\%c", c);
        else if (c < 0x20)
            dp_strbuf_printf(b, "\\u%04x", c);
        else
            dp_strbuf_printf(b, "%c", c);
    }
    dp_strbuf_printf(b, "\"");
}

void dp_strbuf_free(dp_strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

/* ---- charts ---- */

enum { PANEL_W = 540, PANEL_H = 400, ML = 78, MR = 22, MT = 34, MB = 58, HEADER = 86 };
#define MAX_TICKS 64

static const char *const colors[] = {"#222222", "#d62728", "#ff7f0e", "#1f77b4",
                                     "#2ca02c", "#9467bd", "#8c564b", "#e377c2"};
enum { NCOLORS = sizeof colors / sizeof colors[0] };

typedef struct {
    double lo, hi; /* data range, in axis units (log10 of the value on a log axis) */
    int log;
    double px0, px1; /* pixel positions of lo and hi */
} axis;

static double ax_map(const axis *a, double v) {
    double t = a->log ? log10(v) : v;
    return a->px0 + (t - a->lo) / (a->hi - a->lo) * (a->px1 - a->px0);
}

static int usable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

/* tick label: plain numbers up to 6 digits, no trailing zeros */
static void tick_label(char *buf, size_t cap, double v) {
    if (v != 0 && (fabs(v) >= 1e6 || fabs(v) < 1e-4))
        snprintf(buf, cap, "%.0e", v);
    else
        snprintf(buf, cap, "%.6g", v);
}

/* ticks inside [lo, hi] (axis units): decades on a log axis (with 2 and 5 when it spans few
 * decades), 1-2-5 steps on a linear one */
static int make_ticks(const axis *a, double *t, int cap) {
    int n = 0;
    if (a->log) {
        int d0 = (int)floor(a->lo), d1 = (int)ceil(a->hi);
        const double span = a->hi - a->lo;
        const double m[9] = {1, 2, 5, 3, 4, 6, 7, 8, 9};
        const int nm = span <= 1.2 ? 9 : span <= 3.5 ? 3 : 1;
        for (int k = 0; k < nm && n < cap; k++) { /* by priority: decades, then 2 and 5, then the rest */
            for (int d = d0; d <= d1 && n < cap; d++) {
                double v = m[k] * pow(10.0, d);
                double lv = log10(v);
                if (lv >= a->lo - 1e-9 && lv <= a->hi + 1e-9) t[n++] = v;
            }
        }
    } else {
        double span = a->hi - a->lo, raw = span / 6, p = pow(10.0, floor(log10(raw))), step = p;
        if (raw / p > 5)
            step = 10 * p;
        else if (raw / p > 2)
            step = 5 * p;
        else if (raw / p > 1)
            step = 2 * p;
        for (double v = ceil(a->lo / step) * step; v <= a->hi + 1e-9 * span && n < cap; v += step)
            t[n++] = fabs(v) < 1e-12 * span ? 0 : v;
    }
    return n;
}

static void marker(dp_strbuf *b, int shape, double x, double y, const char *color) {
    switch (shape % 8) {
    case 0: /* a ring, a little larger: the first series stays visible under another at the same point */
        dp_strbuf_printf(b,
                         "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"6.5\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                         x, y, color);
        break;
    case 1:
        dp_strbuf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"%s\"/>\n", x - 4, y - 4,
                         color);
        break;
    case 2:
        dp_strbuf_printf(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>\n", x, y - 5.5, x + 5, y + 4,
                         x - 5, y + 4, color);
        break;
    case 3:
        dp_strbuf_printf(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>\n", x, y - 5.5,
                         x + 5.5, y, x, y + 5.5, x - 5.5, y, color);
        break;
    case 4: /* hollow square, larger */
        dp_strbuf_printf(b,
                         "<rect x=\"%.1f\" y=\"%.1f\" width=\"11\" height=\"11\" fill=\"none\" stroke=\"%s\" "
                         "stroke-width=\"2\"/>\n",
                         x - 5.5, y - 5.5, color);
        break;
    case 5: /* inverted triangle */
        dp_strbuf_printf(b, "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"%s\"/>\n", x, y + 5.5, x + 5, y - 4,
                         x - 5, y - 4, color);
        break;
    case 6: /* plus */
        dp_strbuf_printf(b,
                         "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
                         x - 6, y, x + 6, y, x, y - 6, x, y + 6, color);
        break;
    default: /* hollow diamond, larger */
        dp_strbuf_printf(b,
                         "<path d=\"M%.1f %.1fL%.1f %.1fL%.1f %.1fL%.1f %.1fZ\" fill=\"none\" stroke=\"%s\" "
                         "stroke-width=\"2\"/>\n",
                         x, y - 7, x + 7, y, x, y + 7, x - 7, y, color);
    }
}

static void cross(dp_strbuf *b, double x, double y, const char *color) {
    dp_strbuf_printf(b,
                     "<path d=\"M%.1f %.1fL%.1f %.1fM%.1f %.1fL%.1f %.1f\" stroke=\"%s\" stroke-width=\"2.5\" "
                     "fill=\"none\"/>\n",
                     x - 5, y - 5, x + 5, y + 5, x - 5, y + 5, x + 5, y - 5, color);
}

static void range_of(const dp_svg_chart *c, int which_x, int log, double *lo, double *hi) {
    double mn = INFINITY, mx = -INFINITY;
    for (int s = 0; s < c->nseries; s++)
        for (int i = 0; i < c->series[s].n; i++) {
            const dp_svg_series *se = &c->series[s];
            double v = which_x ? se->x[i] : se->y[i];
            if (!which_x && se->mark && se->mark[i]) continue;
            if (!isfinite(v) || (log && v <= 0)) continue;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
    if (which_x)
        for (int i = 0; i < c->nxticks; i++) {
            double v = c->xticks[i];
            if (!isfinite(v) || (log && v <= 0)) continue;
            if (v < mn) mn = v;
            if (v > mx) mx = v;
        }
    if (!which_x && c->hline > 0 && isfinite(c->hline)) {
        if (c->hline < mn) mn = c->hline;
        if (c->hline > mx) mx = c->hline;
    }
    if (!(mn <= mx)) { /* nothing to draw */
        mn = log ? 1 : 0;
        mx = log ? 10 : 1;
    }
    if (log) {
        double l0 = log10(mn), l1 = log10(mx);
        double pad = (l1 - l0) * 0.06;
        if (l1 - l0 < 0.3) pad = 0.15;
        *lo = l0 - pad;
        *hi = l1 + pad;
    } else {
        double pad = (mx - mn) * 0.06;
        if (mx - mn <= 0) pad = fabs(mx) > 0 ? fabs(mx) * 0.1 : 1;
        *lo = mn - pad;
        *hi = mx + pad;
        if (mn >= 0 && *lo < 0) *lo = 0;
    }
}

static void chart(dp_strbuf *b, const dp_svg_chart *c, double ox, double oy) {
    const double x0 = ox + ML, x1 = ox + PANEL_W - MR, y0 = oy + PANEL_H - MB, y1 = oy + MT;
    axis ax = {0, 0, c->logx, x0, x1}, ay = {0, 0, c->logy, y0, y1 + 30}; /* room at the top for marks */
    range_of(c, 1, c->logx, &ax.lo, &ax.hi);
    range_of(c, 0, c->logy, &ay.lo, &ay.hi);
    char lab[64];

    dp_strbuf_printf(b,
                     "<g>\n<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">",
                     (x0 + x1) / 2, oy + 20);
    dp_strbuf_xml(b, c->title ? c->title : "");
    dp_strbuf_printf(b, "</text>\n");
    dp_strbuf_printf(
        b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ffffff\" stroke=\"#888888\"/>\n", x0, y1,
        x1 - x0, y0 - y1);

    /* y ticks and grid */
    double t[MAX_TICKS];
    int nt = make_ticks(&ay, t, MAX_TICKS);
    double labelled[MAX_TICKS];
    int nl = 0;
    for (int i = 0; i < nt; i++) {
        double py = ax_map(&ay, t[i]);
        if (py < y1 - 0.5 || py > y0 + 0.5) continue;
        int major = !c->logy || fabs(log10(t[i]) - round(log10(t[i]))) < 1e-9;
        dp_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x0, py, x1, py,
                         major ? "#d0d0d0" : "#ececec");
        int crowded = 0; /* too close to a label of higher priority */
        for (int j = 0; j < nl; j++) crowded |= fabs(py - labelled[j]) < 15;
        if (crowded) continue;
        labelled[nl++] = py;
        tick_label(lab, sizeof lab, t[i]);
        dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\">%s</text>\n", x0 - 6,
                         py + 4, lab);
    }
    /* x ticks: the given ones (batch sizes) or automatic */
    const double *xt = c->xticks;
    int nxt = c->nxticks;
    double auto_t[MAX_TICKS];
    if (!xt || nxt <= 0) {
        nxt = make_ticks(&ax, auto_t, MAX_TICKS);
        xt = auto_t;
    }
    for (int i = 0; i < nxt; i++) {
        if (!usable(&ax, xt[i])) continue;
        double px = ax_map(&ax, xt[i]);
        dp_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", px, y1, px,
                         y0);
        dp_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888888\"/>\n", px, y0, px,
                         y0 + 5);
        tick_label(lab, sizeof lab, xt[i]);
        dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n", px,
                         y0 + 19, lab);
    }
    /* axis titles */
    dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\">", (x0 + x1) / 2, y0 + 44);
    dp_strbuf_xml(b, c->xlabel ? c->xlabel : "");
    dp_strbuf_printf(b, "</text>\n");
    double ly = (y0 + y1) / 2, lx = ox + 18;
    dp_strbuf_printf(b,
                     "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"13\" "
                     "transform=\"rotate(-90 %.1f %.1f)\">",
                     lx, ly, lx, ly);
    dp_strbuf_xml(b, c->ylabel ? c->ylabel : "");
    dp_strbuf_printf(b, "</text>\n");

    /* reference line */
    if (c->hline > 0 && usable(&ay, c->hline)) {
        double py = ax_map(&ay, c->hline);
        dp_strbuf_printf(b,
                         "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555555\" "
                         "stroke-dasharray=\"6 4\" stroke-width=\"1.2\"/>\n",
                         x0, py, x1, py);
        if (c->hline_label) {
            dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\" fill=\"#555555\">",
                             x1 - 4, py - 4);
            dp_strbuf_xml(b, c->hline_label);
            dp_strbuf_printf(b, "</text>\n");
        }
    }

    /* series: polylines broken at missing or marked points, markers, marks at the top */
    int marks_at[MAX_TICKS] = {0}; /* marks drawn so far per x tick, to stack them */
    for (int s = 0; s < c->nseries; s++) {
        const dp_svg_series *se = &c->series[s];
        const char *col = colors[se->style % NCOLORS];
        int open = 0;
        for (int i = 0; i < se->n; i++) {
            int ok = usable(&ax, se->x[i]) && usable(&ay, se->y[i]) && !(se->mark && se->mark[i]);
            if (ok) {
                if (!open)
                    dp_strbuf_printf(b, "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"%s\" points=\"", col);
                dp_strbuf_printf(b, "%s%.1f,%.1f", open ? " " : "", ax_map(&ax, se->x[i]), ax_map(&ay, se->y[i]));
                open = 1;
            }
            if (!ok && open) {
                dp_strbuf_printf(b, "\"/>\n");
                open = 0;
            }
        }
        if (open) dp_strbuf_printf(b, "\"/>\n");
        for (int i = 0; i < se->n; i++) {
            if (!usable(&ax, se->x[i])) continue;
            double px = ax_map(&ax, se->x[i]);
            if (se->mark && se->mark[i]) {
                int slot = 0;
                for (int k = 0; k < nxt && k < MAX_TICKS; k++)
                    if (xt[k] == se->x[i]) slot = marks_at[k]++;
                double py = y1 + 10 + 14 * slot;
                cross(b, px, py, col);
                int left = px > x1 - 40; /* keep the text inside the plot */
                dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\" text-anchor=\"%s\">",
                                 left ? px - 8 : px + 8, py + 4, col, left ? "end" : "start");
                dp_strbuf_xml(b, c->mark_text ? c->mark_text : "OOM");
                dp_strbuf_printf(b, "</text>\n");
            } else if (usable(&ay, se->y[i])) {
                marker(b, se->style, px, ax_map(&ay, se->y[i]), col);
            }
        }
    }
    dp_strbuf_printf(b, "</g>\n");
}

void dp_svg_charts(dp_strbuf *b, const char *title, const char *note, const dp_svg_chart *charts, int ncharts,
                   int ncols) {
    if (ncols < 1) ncols = 1;
    int nrows = (ncharts + ncols - 1) / ncols;
    if (nrows < 1) nrows = 1;
    int extra = 0; /* note lines beyond the first */
    for (const char *p = note; p && (p = strchr(p, '\n')) != NULL; p++) extra += 16;
    int w = ncols * PANEL_W + 20, h = HEADER + extra + nrows * PANEL_H + 10;
    dp_strbuf_printf(b,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                     "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
                     "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n",
                     w, h, w, h, w, h);
    dp_strbuf_printf(b, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">", w / 2);
    dp_strbuf_xml(b, title ? title : "");
    dp_strbuf_printf(b, "</text>\n");
    int nlines = 0;
    if (note) { /* one line of text per '\n'-separated part */
        const char *p = note;
        while (p) {
            const char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);
            char line[512];
            snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
            dp_strbuf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\" fill=\"#444444\">",
                             w / 2, 44 + 16 * nlines);
            dp_strbuf_xml(b, line);
            dp_strbuf_printf(b, "</text>\n");
            nlines++;
            p = nl ? nl + 1 : NULL;
        }
    }
    /* legend: the series of the first chart (every chart has the same series) */
    if (ncharts > 0) {
        const dp_svg_chart *c = &charts[0];
        double item_w = 120, lx = w / 2.0 - (c->nseries * item_w + 110) / 2.0, ly = 68 + extra;
        for (int s = 0; s < c->nseries; s++) {
            const char *col = colors[c->series[s].style % NCOLORS];
            double x = lx + s * item_w;
            dp_strbuf_printf(
                b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, ly,
                x + 28, ly, col);
            marker(b, c->series[s].style, x + 14, ly, col);
            dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\">", x + 34, ly + 4.5);
            dp_strbuf_xml(b, c->series[s].name ? c->series[s].name : "");
            dp_strbuf_printf(b, "</text>\n");
        }
        double x = lx + c->nseries * item_w;
        cross(b, x + 8, ly, "#555555");
        dp_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\">", x + 20, ly + 4.5);
        dp_strbuf_xml(b, c->mark_text ? c->mark_text : "OOM");
        dp_strbuf_printf(b, " (not run)</text>\n");
    }
    for (int i = 0; i < ncharts; i++)
        chart(b, &charts[i], 10 + (i % ncols) * PANEL_W, HEADER + extra + (i / ncols) * PANEL_H);
    dp_strbuf_printf(b, "</svg>\n");
}
