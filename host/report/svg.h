/*
 * svg.h: the comparison's plots as standalone SVG files, drawn by the project's own small
 * plotting code (no plotting dependency): the loss curves of all arms on one chart, the
 * accuracy matrix of each arm as a heat map (bars for a one-stage arm), and accuracy against
 * trainable parameters.
 */
#ifndef PEFT_SVG_H
#define PEFT_SVG_H

#include "report.h"

/* Write DIR/loss.svg. -1 with err_set. */
int svg_loss_curves(const struct compare_result *cr, const char *path);
/* Write the accuracy heat map of arm i. */
int svg_accuracy_heatmap(const struct compare_result *cr, int32_t arm, const char *path);
/* Write the accuracy of each task after arm i's only stage as bars (mean, ± sd with seeds):
 * what a one-row heat map would show. */
int svg_accuracy_bars(const struct compare_result *cr, int32_t arm, const char *path);
/* Write final average accuracy against trainable parameters (log scale). */
int svg_accuracy_vs_params(const struct compare_result *cr, const char *path);

/* Text escaped for XML (& < > " '). Caller frees. */
char *svg_escape(const char *s);

#endif
