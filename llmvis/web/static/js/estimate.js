// Memory estimate of the next run, shown under the Generate button while the user types.
// It asks POST /api/estimate (tokenizes only) a moment after the last change.

/** Bytes as a short human string ("48 MB", "1.2 GB"). Pure. */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${v >= 10 || u === 0 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/** The line to show for an /api/estimate answer. Pure; `t` translates. */
export function estimateText(est, t) {
  const vars = {
    run: fmtBytes(est.run_bytes), peak: fmtBytes(est.peak_bytes),
    tokens: est.num_tokens, budget: fmtBytes(est.store_budget_bytes),
  };
  return est.fits ? t('estimate.fits', vars) : t('estimate.over', { ...vars, message: est.message || '' });
}

export function createEstimate(doc, { api, controls, i18n, delayMs = 350 }) {
  const el = doc.getElementById('estimate');
  let timer = null;
  let seq = 0;
  let last = null;

  const render = () => {
    if (!last) { el.textContent = ''; el.hidden = true; return; }
    el.hidden = false;
    el.textContent = estimateText(last, i18n.t);
    el.classList.toggle('over', !last.fits);
    el.dataset.fits = last.fits ? 'true' : 'false';
  };

  const refresh = async () => {
    const { payload } = controls.read();
    const mine = ++seq;
    if (!payload) { last = null; render(); return; }
    try {
      const est = await api.estimate(payload);
      if (mine === seq) { last = est; render(); }
    } catch {
      if (mine === seq) { last = null; render(); } // the Generate path shows real errors
    }
  };

  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, delayMs);
  };

  controls.form.addEventListener('input', schedule);
  i18n.onChange(render);
  return { refresh, schedule };
}
