// The left column: prompt, sampling controls, model info, busy state and the error line.

const SLIDERS = ['temperature', 'top-k', 'top-p', 'max-new-tokens'];

/**
 * Validate raw form values and build the /api/generate payload.
 * Returns {payload} or {error}. Pure; `t` translates messages.
 */
export function buildPayload(raw, t) {
  const prompt = String(raw.prompt ?? '');
  if (!prompt.trim()) return { error: t('err.emptyPrompt') };
  const num = (value, field, { int = false } = {}) => {
    const s = String(value ?? '').trim();
    const x = Number(s);
    if (s === '' || !Number.isFinite(x) || (int && !Number.isInteger(x))) {
      return { error: t('err.badNumber', { field }) };
    }
    return { value: x };
  };
  const fields = [
    ['temperature', raw.temperature, {}],
    ['top_k', raw.top_k, { int: true }],
    ['top_p', raw.top_p, {}],
    ['max_new_tokens', raw.max_new_tokens, { int: true }],
  ];
  const payload = { prompt };
  if (String(raw.system ?? '').trim()) payload.system = String(raw.system);
  for (const [name, value, opts] of fields) {
    const r = num(value, name, opts);
    if (r.error) return r;
    payload[name] = r.value;
  }
  if (String(raw.seed ?? '').trim() !== '') {
    const r = num(raw.seed, 'seed', { int: true });
    if (r.error) return r;
    payload.seed = r.value;
  }
  return { payload };
}

function dlRow(dl, label, value) {
  const dt = document.createElement('dt');
  dt.textContent = label;
  const dd = document.createElement('dd');
  dd.textContent = value;
  dd.title = value;
  dl.append(dt, dd);
}

export function createControls(doc, { i18n }) {
  const $ = (id) => doc.getElementById(id);
  const { t } = i18n;
  const form = $('gen-form');
  const errorEl = $('error');
  const busyEl = $('busy');
  const generateBtn = $('generate');
  const modelDl = $('model-info');
  const seedLast = $('seed-last');
  let model = null;

  for (const id of SLIDERS) {
    const num = $(id);
    const range = $(`${id}-range`);
    range.addEventListener('input', () => { num.value = range.value; });
    num.addEventListener('input', () => { if (num.value !== '') range.value = num.value; });
  }

  const renderModel = () => {
    modelDl.replaceChildren();
    if (!model) {
      dlRow(modelDl, t('model.unavailable'), '');
      return;
    }
    dlRow(modelDl, t('model.name'), String(model.name ?? '—'));
    dlRow(modelDl, t('model.architecture'), String(model.architecture ?? '—'));
    dlRow(modelDl, t('model.layers'), String(model.num_layers ?? '—'));
    dlRow(modelDl, t('model.heads'), String(model.num_heads ?? '—'));
    dlRow(modelDl, t('model.kvHeads'), String(model.num_kv_heads ?? '—'));
    dlRow(modelDl, t('model.hidden'), String(model.hidden_size ?? '—'));
    dlRow(modelDl, t('model.vocab'), model.vocab_size == null ? '—' : Number(model.vocab_size).toLocaleString());
    dlRow(modelDl, t('model.device'), `${model.device ?? '—'} · ${model.dtype ?? ''}`);
  };

  return {
    form,
    setModel(info) {
      model = info;
      const maxNew = info?.limits?.max_new_tokens;
      if (Number.isFinite(maxNew) && maxNew > 0) {
        for (const el of [$('max-new-tokens'), $('max-new-tokens-range')]) el.max = String(maxNew);
        if (Number($('max-new-tokens').value) > maxNew) {
          $('max-new-tokens').value = String(maxNew);
          $('max-new-tokens-range').value = String(maxNew);
        }
      }
      renderModel();
    },
    renderModel,
    read() {
      return buildPayload({
        prompt: $('prompt').value,
        system: $('system').value,
        temperature: $('temperature').value,
        top_k: $('top-k').value,
        top_p: $('top-p').value,
        max_new_tokens: $('max-new-tokens').value,
        seed: $('seed').value,
      }, t);
    },
    setBusy(busy) {
      busyEl.hidden = !busy;
      generateBtn.disabled = busy;
      form.setAttribute('aria-busy', busy ? 'true' : 'false');
      doc.body.dataset.busy = busy ? 'true' : 'false';
    },
    showError(message) {
      errorEl.textContent = message;
      errorEl.classList.toggle('visible', Boolean(message));
    },
    clearError() {
      errorEl.textContent = '';
      errorEl.classList.remove('visible');
    },
    showLastSeed(seed) {
      if (seed == null) { seedLast.hidden = true; return; }
      seedLast.hidden = false;
      seedLast.textContent = `↺ ${seed}`;
      seedLast.dataset.seed = String(seed);
    },
    reuseSeed() {
      if (seedLast.dataset.seed) $('seed').value = seedLast.dataset.seed;
    },
  };
}
