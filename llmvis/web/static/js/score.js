// Score text: the summary of a scored run (perplexity, mean NLL) and its GLTR histogram, which
// doubles as the legend of the chip colours (rank ≤ 10 green, ≤ 100 yellow, ≤ 1000 red, beyond
// purple, as in GLTR).

import { GLTR_BUCKETS } from './colors.js';
import { el } from './util.js';

/** Counts and shares of the four GLTR buckets, in order. Pure. */
export function gltrShares(gltr) {
  const counts = GLTR_BUCKETS.map((b) => Number(gltr?.[b.key] ?? 0));
  const total = counts.reduce((a, b) => a + b, 0);
  return GLTR_BUCKETS.map((b, i) => ({
    key: b.key, colour: b.colour, count: counts[i], share: total ? counts[i] / total : 0,
  }));
}

/** Perplexity with sensible precision. Pure. */
export function fmtPerplexity(p) {
  if (p == null || !Number.isFinite(p)) return '—';
  if (p >= 1000) return p.toExponential(2);
  return p.toFixed(p >= 100 ? 1 : 2);
}

/**
 * The top-bar summary of a run: generated tokens, speed and why it stopped, or for a scored
 * text its token count and perplexity. Pure; `t` translates.
 */
export function runSummaryText(run, t) {
  if (!run) return '';
  // the history could not keep the run (read-only or full data folder): say so, with the reason
  const unsaved = run.saved === false ? ` · ${t('run.notSaved', { reason: run.save_error || '' })}` : '';
  if (run.kind === 'score' && run.score) {
    return t('run.summaryScore', { n: run.score.num_scored, ppl: fmtPerplexity(run.score.perplexity) }) + unsaved;
  }
  const nGen = run.tokens.filter((x) => x.source === 'generated').length;
  const tps = run.timing?.tokens_per_s;
  return t('run.summary', {
    n: nGen,
    tps: Number.isFinite(tps) ? tps.toFixed(1) : '—',
    reason: t(`run.reason.${run.finish_reason}`),
  }) + unsaved;
}

/** Fill `root` with the score of `run` (a kind "score" run), or empty it for other runs. */
export function renderScoreSummary(root, run, { t, doc = root.ownerDocument }) {
  root.replaceChildren();
  const score = run?.kind === 'score' ? run.score : null;
  root.hidden = !score;
  if (!score) return;
  const big = el(doc, 'div', 'score-ppl');
  big.append(el(doc, 'span', 'score-ppl-k', t('score.perplexity')));
  const value = el(doc, 'span', 'score-ppl-v', fmtPerplexity(score.perplexity));
  value.setAttribute('data-testid', 'perplexity');
  value.dataset.value = String(score.perplexity ?? '');
  big.append(value);
  const sub = el(doc, 'div', 'score-sub', t('score.detail', {
    nll: score.mean_nll == null ? '—' : score.mean_nll.toFixed(3),
    n: score.num_scored,
  }));
  const shares = gltrShares(score.gltr);
  const bar = el(doc, 'div', 'gltr-bar');
  bar.setAttribute('aria-hidden', 'true');
  for (const s of shares) {
    if (!s.count) continue;
    const seg = el(doc, 'span', 'gltr-seg');
    seg.style.flexGrow = String(s.count);
    seg.style.background = s.colour;
    bar.append(seg);
  }
  const legend = el(doc, 'div', 'gltr-legend');
  legend.setAttribute('data-testid', 'gltr-legend');
  for (const s of shares) {
    const item = el(doc, 'span', 'gltr-item');
    item.dataset.bucket = s.key;
    const sw = el(doc, 'span', 'gltr-swatch');
    sw.style.background = s.colour;
    item.append(sw, el(doc, 'span', 'gltr-name', t(`gltr.${s.key}`)),
      el(doc, 'span', 'gltr-count', `${s.count} · ${(100 * s.share).toFixed(0)}%`));
    legend.append(item);
  }
  root.append(el(doc, 'div', 'score-title', t('score.result')), big, sub, bar, legend);
}
