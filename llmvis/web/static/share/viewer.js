// Viewer of a shared llmvis run: inlined into one self-contained HTML file with ECharts.
// It reads the run from <script type="application/json" id="llmvis-data"> with JSON.parse and
// builds the page with DOM calls; token text is only ever set through textContent.
(function llmvisShareViewer() {
  'use strict';

  const STRINGS = {
    en: {
      tokens: 'Tokens, coloured by probability',
      hint: 'Click a token to see what else the model considered.',
      candidates: 'Alternatives at position {pos}',
      pickToken: 'Pick a generated or prompt token (not position 0).',
      confidence: 'Probability and entropy per token',
      prob: 'probability',
      entropy: 'entropy (nats)',
      attention: 'Attention (mean over heads)',
      layer: 'Layer {l}',
      pooled: 'pooled: each cell is the max over {b}×{b} tokens',
      query: 'query',
      key: 'key',
      params: 'temperature {temperature} · top-k {top_k} · top-p {top_p} · seed {seed}',
      reason: 'finish: {r}',
      made: 'Made with llmvis; works offline.',
      prompt: 'prompt',
      generated: 'generated',
      position: 'position {pos}',
      rank: 'rank',
      lens: 'Logit lens: each layer\'s top-1 next token',
      lensNote: 'positions {a}–{b} of {n}; layer 0 is the embeddings, layer {L} the output; colour: top-1 probability',
      lensTip: 'layer {l} · position {pos} ({tok}): top-1 {top} · p {p}',
      heads: 'Attention heads',
      headsNote: 'mean over query rows 1… ({rows} of {n} rows)',
      metric_entropy: 'entropy (nats)',
      metric_sink: 'sink share (to position 0)',
      metric_prev: 'previous-token share',
      head: 'head',
      layerAxis: 'layer',
      headTip: 'layer {l} · head {h} (KV {kv}): {v}',
      explain: 'Why this token: direct logit attribution',
      explainNote: 'position {pos} ({tok}): logit {logit} = embedding {emb} + attention heads {heads} + MLPs {mlp}{bias} (sum {total})',
      explainTip: 'layer {l} · {part}: {v} of the logit',
      mlp: 'MLP',
      bias: 'bias',
      biasPart: ' + output biases {b}',
    },
    zh: {
      tokens: '词元（按概率着色）',
      hint: '点击一个词元，查看模型考虑过的其他候选。',
      candidates: '位置 {pos} 的候选词元',
      pickToken: '请选择一个词元（位置 0 除外）。',
      confidence: '每个词元的概率与熵',
      prob: '概率',
      entropy: '熵（nats）',
      attention: '注意力（各头平均）',
      layer: '第 {l} 层',
      pooled: '已池化：每格为 {b}×{b} 个词元中的最大值',
      query: '查询',
      key: '键',
      params: '温度 {temperature} · top-k {top_k} · top-p {top_p} · 种子 {seed}',
      reason: '结束原因：{r}',
      made: '由 llmvis 生成，可离线查看。',
      prompt: '提示',
      generated: '生成',
      position: '位置 {pos}',
      rank: '排名',
      lens: 'Logit lens：各层预测的 top-1 下一个词元',
      lensNote: '位置 {a}–{b}（共 {n}）；第 0 层为词嵌入，第 {L} 层为输出；颜色：top-1 概率',
      lensTip: '第 {l} 层 · 位置 {pos}（{tok}）：top-1 {top} · p {p}',
      heads: '注意力头',
      headsNote: '对查询行 1… 取平均（{n} 行中的 {rows} 行）',
      metric_entropy: '熵（nats）',
      metric_sink: '汇聚占比（指向位置 0）',
      metric_prev: '前一词元占比',
      head: '头',
      layerAxis: '层',
      headTip: '第 {l} 层 · 头 {h}（KV {kv}）：{v}',
      explain: '为什么是这个词元：直接 logit 归因',
      explainNote: '位置 {pos}（{tok}）：logit {logit} = 词嵌入 {emb} + 注意力头 {heads} + MLP {mlp}{bias}（合计 {total}）',
      explainTip: '第 {l} 层 · {part}：对 logit 贡献 {v}',
      mlp: 'MLP',
      bias: '偏置',
      biasPart: ' + 输出偏置 {b}',
    },
  };
  const lang = String(navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
  const t = (key, vars) => String(STRINGS[lang][key] || STRINGS.en[key] || key)
    .replace(/\{(\w+)\}/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));

  const MAGMA = ['#2b115e', '#51127c', '#7a1d81', '#a3307e', '#cc4272', '#ef5f5f', '#fc8961', '#feb77e', '#fde0a0'];
  const INFERNO = ['#000004', '#1b0c41', '#4a0c6b', '#781c6d', '#a52c60', '#cf4446', '#ed6925', '#fb9b06', '#f7d13d', '#fcffa4'];
  const TEXT = '#c9d1db';
  const MUTED = '#7d8896';
  const GRID = '#232a33';

  const data = JSON.parse(document.getElementById('llmvis-data').textContent);
  const doc = document;
  const el = (tag, cls, text) => {
    const node = doc.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  };

  /** Whitespace and control characters made visible (token text is untrusted and shown as text). */
  const visible = (s, max) => {
    const out = String(s == null ? '' : s).replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→')
      .replace(/[\u0000-\u001f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    return max && out.length > max ? `${out.slice(0, max - 1)}…` : (out || '∅');
  };
  /** Text for ECharts tooltips, which render their formatter's string as HTML. */
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const sample = (stops, x) => {
    const v = Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(v));
    const f = v - i;
    const rgb = (h) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16));
    const a = rgb(stops[i]);
    const b = rgb(stops[i + 1]);
    return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(',')})`;
  };
  // Surprise on a log scale: p = 1 is the dark end, p <= 1e-4 the bright end.
  const surprise = (p) => (p == null ? 0 : Math.min(1, -Math.log10(Math.max(p, 1e-4)) / 4));
  const probColour = (p) => sample(MAGMA, surprise(p));
  const fmtP = (p) => (p == null ? '—' : p >= 0.01 ? `${(p * 100).toFixed(1)}%` : p.toExponential(1));

  const tokens = data.tokens;
  const labels = tokens.map((tok) => visible(tok.text, 10));
  let selected = tokens.findIndex((tok) => tok.source === 'generated');
  if (selected < 1) selected = tokens.length > 1 ? 1 : 0;

  // ---------- layout ----------
  const app = doc.getElementById('app');
  const head = el('header', 'head');
  head.append(el('h1', 'title', data.title));
  const meta = el('p', 'meta');
  const params = data.params || {};
  meta.textContent = [data.model && data.model.name, t('params', params), t('reason', { r: data.finish_reason })]
    .filter(Boolean).join(' · ');
  head.append(meta);
  app.append(head);

  const section = (title, id) => {
    const s = el('section', 'card');
    s.id = id;
    const h = el('h2', 'card-title', title);
    s.append(h);
    app.append(s);
    return s;
  };

  const tokSec = section(t('tokens'), 'tokens');
  tokSec.append(el('p', 'hint', t('hint')));
  const chips = el('div', 'chips');
  tokSec.append(chips);
  const chipEls = tokens.map((tok) => {
    const c = el('button', `chip ${tok.source}${tok.special ? ' special' : ''}`, visible(tok.text));
    c.type = 'button';
    c.dataset.position = String(tok.position);
    c.style.background = tok.position === 0 ? '#2a313b' : probColour(tok.prob);
    if (tok.position > 0 && surprise(tok.prob) > 0.62) c.style.color = '#14161a';
    c.title = `${t('position', { pos: tok.position })} · p ${fmtP(tok.prob)} · ${t('rank')} ${tok.rank == null ? '—' : tok.rank}`;
    c.addEventListener('click', () => select(tok.position));
    chips.append(c);
    return c;
  });

  const chartBox = (sec, cls) => {
    const box = el('div', `chart ${cls || ''}`);
    sec.append(box);
    return box;
  };
  const candSec = section('', 'candidates');
  const candTitle = candSec.querySelector('.card-title');
  const candChart = echarts.init(chartBox(candSec, 'short'), null, { renderer: 'canvas' });
  const confSec = section(t('confidence'), 'confidence');
  const confChart = echarts.init(chartBox(confSec), null, { renderer: 'canvas' });
  const attSec = section(t('attention'), 'attention');
  const layerSel = el('select', 'layer-select');
  layerSel.setAttribute('aria-label', 'layer');
  const layers = (data.attention && data.attention.layers) || [];
  layers.forEach((a, i) => {
    const o = el('option', null, t('layer', { l: a.layer }));
    o.value = String(i);
    layerSel.append(o);
  });
  layerSel.value = String(Math.floor(layers.length / 2));
  const attNote = el('span', 'note');
  const attBar = el('div', 'toolbar');
  attBar.append(layerSel, attNote);
  attSec.insertBefore(attBar, attSec.children[1] || null);
  const attBox = chartBox(attSec, 'square');
  const attChart = echarts.init(attBox, null, { renderer: 'canvas' });

  let lensChart = null;
  let lensBox = null;
  if (data.lens) {
    const sec = section(t('lens'), 'lens');
    const lens = data.lens;
    sec.append(el('p', 'note', t('lensNote', { a: lens.start, b: lens.end - 1, n: tokens.length, L: lens.num_layers })));
    lensBox = chartBox(sec, 'lens-chart');
    lensBox.style.height = `${Math.max(320, (lens.num_layers + 1) * 18 + 130)}px`;
    lensChart = echarts.init(lensBox, null, { renderer: 'canvas' });
  }
  let headsChart = null;
  let metricSel = null;
  if (data.heads) {
    const sec = section(t('heads'), 'heads');
    const bar = el('div', 'toolbar');
    metricSel = el('select', 'metric-select');
    metricSel.setAttribute('aria-label', 'metric');
    ['entropy', 'sink', 'prev'].forEach((m) => {
      const o = el('option', null, t(`metric_${m}`));
      o.value = m;
      metricSel.append(o);
    });
    bar.append(metricSel, el('span', 'note', t('headsNote', { rows: data.heads.query_rows_used, n: data.heads.num_tokens })));
    sec.append(bar);
    const box = chartBox(sec, 'heads-chart');
    box.style.height = `${Math.max(320, data.heads.num_layers * 18 + 110)}px`;
    headsChart = echarts.init(box, null, { renderer: 'canvas' });
  }
  let explainChart = null;
  let explainHasBias = false;
  if (data.explain) {
    const x = data.explain;
    const sec = section(t('explain'), 'explain');
    const sum = (arr) => arr.reduce((acc, v) => acc + v, 0);
    const headsSum = sum(x.heads.map(sum));
    const biasSum = sum(x.o_bias) + (x.lm_bias || 0);
    explainHasBias = x.o_bias.some((v) => v !== 0);
    const f = (v) => (v >= 0 ? '+' : '') + v.toFixed(3);
    sec.append(el('p', 'note', t('explainNote', {
      pos: x.position, tok: visible(x.target.text, 24), logit: x.logit.toFixed(3), emb: f(x.embedding),
      heads: f(headsSum), mlp: f(sum(x.mlp)), bias: biasSum !== 0 ? t('biasPart', { b: f(biasSum) }) : '', total: x.total.toFixed(3),
    })));
    const box = chartBox(sec, 'explain-chart');
    box.style.height = `${Math.max(320, x.num_layers * 18 + 110)}px`;
    explainChart = echarts.init(box, null, { renderer: 'canvas' });
  }
  app.append(el('p', 'foot', t('made')));

  // ---------- charts ----------
  const axisStyle = {
    axisLine: { lineStyle: { color: '#3a4350' } },
    axisLabel: { color: MUTED },
    splitLine: { lineStyle: { color: GRID } },
  };

  function renderCandidates() {
    const cands = data.candidates[selected];
    candTitle.textContent = t('candidates', { pos: selected });
    if (!cands || !cands.length) {
      candChart.clear();
      candChart.setOption({ title: { text: t('pickToken'), left: 'center', top: 'middle', textStyle: { color: MUTED, fontSize: 13 } } });
      return;
    }
    const chosen = tokens[selected].text;
    candChart.setOption({
      animation: false,
      grid: { left: 120, right: 60, top: 10, bottom: 24 },
      xAxis: { type: 'value', max: 1, ...axisStyle },
      yAxis: { type: 'category', inverse: true, data: cands.map((c) => visible(c.text, 16)), ...axisStyle },
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      series: [{
        type: 'bar',
        data: cands.map((c) => ({ value: c.prob, itemStyle: { color: c.text === chosen ? '#e0af68' : '#7aa2f7' } })),
        label: { show: true, position: 'right', color: TEXT, formatter: (p) => fmtP(p.value) },
      }],
    }, { notMerge: true });
  }

  function renderConfidence() {
    confChart.setOption({
      animation: false,
      legend: { textStyle: { color: TEXT }, top: 0 },
      grid: { left: 50, right: 50, top: 30, bottom: 60 },
      tooltip: { trigger: 'axis' },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 16, bottom: 8 }],
      xAxis: { type: 'category', data: labels, ...axisStyle },
      yAxis: [
        { type: 'value', name: t('prob'), min: 0, max: 1, nameTextStyle: { color: MUTED }, ...axisStyle },
        { type: 'value', name: t('entropy'), nameTextStyle: { color: MUTED }, ...axisStyle, splitLine: { show: false } },
      ],
      series: [
        {
          name: t('prob'),
          type: 'bar',
          data: tokens.map((tok) => ({ value: tok.prob, itemStyle: { color: tok.position === selected ? '#f7768e' : probColour(tok.prob) } })),
        },
        {
          name: t('entropy'),
          type: 'line',
          yAxisIndex: 1,
          showSymbol: false,
          lineStyle: { color: '#9ece6a', width: 1.5 },
          itemStyle: { color: '#9ece6a' },
          data: tokens.map((tok) => tok.entropy),
        },
      ],
    }, { notMerge: true });
  }

  function renderAttention() {
    const a = layers[Number(layerSel.value)];
    if (!a) return;
    const scale = data.attention.scale;
    const cells = [];
    let max = 0;
    a.matrix.forEach((row, q) => row.forEach((v, k) => {
      if (k <= q || a.block > 1) {
        const w = v / scale;
        cells.push([k, q, w]);
        if (q > 0 && k > 0 && w > max) max = w;
      }
    }));
    const axisLabels = (n) => Array.from({ length: n }, (_, i) => (a.block > 1 ? String(i * a.block) : labels[i]));
    attNote.textContent = a.block > 1 ? t('pooled', { b: a.block }) : '';
    // A square grid (one cell per query and key, whatever the run's length): its side is what the
    // width leaves beside the labels and the colour scale, and the box's height follows it.
    const G = { left: 112, right: 96, top: 12, bottom: 104 };
    const side = Math.max(160, Math.min(attBox.clientWidth - G.left - G.right, 760));
    const height = side + G.top + G.bottom;
    if (Math.abs(attBox.clientHeight - height) > 1) {
      attBox.style.height = `${height}px`;
      attChart.resize();
    }
    attChart.setOption({
      animation: false,
      grid: { left: G.left, top: G.top, width: side, height: side },
      tooltip: { formatter: (p) => `${t('query')} ${p.value[1] * a.block} · ${t('key')} ${p.value[0] * a.block}: ${p.value[2].toFixed(4)}` },
      xAxis: {
        type: 'category', data: axisLabels(a.cols), name: t('key'), nameLocation: 'middle', nameGap: 78,
        nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED, rotate: 60 }, splitArea: { show: false },
      },
      yAxis: {
        type: 'category', data: axisLabels(a.rows), name: t('query'), nameLocation: 'middle', nameGap: 86, nameRotate: 90,
        nameTextStyle: { color: MUTED }, inverse: true, axisLabel: { color: MUTED, width: 76, overflow: 'truncate' },
      },
      visualMap: {
        min: 0, max: max || 1, calculable: true, precision: 3, left: G.left + side + 16, top: G.top + side / 2 - 70,
        inRange: { color: INFERNO }, textStyle: { color: MUTED },
      },
      series: [{ type: 'heatmap', data: cells, progressive: 0 }],
    }, { notMerge: true });
  }

  function renderLens() {
    const lens = data.lens;
    const positions = Array.from({ length: lens.end - lens.start }, (_, i) => lens.start + i);
    const cells = [];
    lens.prob.forEach((row, layer) => row.forEach((p, i) => cells.push([i, layer, p])));
    const few = positions.length <= 24;  // wide cells: the top-1 text fits inside them
    lensChart.setOption({
      animation: false,
      grid: { left: 56, right: 90, top: 12, bottom: 100 },
      tooltip: {
        formatter: (p) => esc(t('lensTip', {
          l: p.value[1], pos: positions[p.value[0]], tok: labels[positions[p.value[0]]],
          top: visible(lens.texts[lens.top1[p.value[1]][p.value[0]]], 24), p: fmtP(p.value[2]),
        })),
      },
      xAxis: {
        type: 'category', data: positions.map((pos) => labels[pos]), axisLabel: { color: MUTED, rotate: 60 },
      },
      yAxis: {
        type: 'category', data: Array.from({ length: lens.num_layers + 1 }, (_, l) => String(l)), name: t('layerAxis'),
        nameLocation: 'middle', nameGap: 36, nameRotate: 90, nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED },
      },
      visualMap: { min: 0, max: 1, calculable: true, precision: 2, right: 0, top: 'middle', inRange: { color: INFERNO }, textStyle: { color: MUTED } },
      series: [{
        type: 'heatmap',
        data: cells,
        progressive: 0,
        label: {
          show: few, fontSize: 9, color: '#f3f4f7',
          formatter: (p) => visible(lens.texts[lens.top1[p.value[1]][p.value[0]]], 6),
        },
      }],
    }, { notMerge: true });
  }

  function renderHeads() {
    const h = data.heads;
    const metric = metricSel.value;
    const values = h[metric];
    const cells = [];
    let max = 0;
    values.forEach((row, layer) => row.forEach((v, head) => {
      cells.push([head, layer, v]);
      if (v > max) max = v;
    }));
    headsChart.setOption({
      animation: false,
      grid: { left: 56, right: 90, top: 12, bottom: 48 },
      tooltip: {
        formatter: (p) => esc(t('headTip', { l: p.value[1], h: p.value[0], kv: h.kv_group[p.value[0]], v: p.value[2].toFixed(3) })),
      },
      xAxis: {
        type: 'category', data: Array.from({ length: h.num_heads }, (_, i) => String(i)), name: t('head'),
        nameLocation: 'middle', nameGap: 28, nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED },
      },
      yAxis: {
        type: 'category', data: Array.from({ length: h.num_layers }, (_, l) => String(l)), name: t('layerAxis'),
        nameLocation: 'middle', nameGap: 36, nameRotate: 90, nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED },
      },
      visualMap: {
        min: 0, max: metric === 'entropy' ? (max || 1) : 1, calculable: true, precision: 2, right: 0, top: 'middle',
        inRange: { color: MAGMA }, textStyle: { color: MUTED },
      },
      series: [{
        type: 'heatmap', data: cells, progressive: 0,
        label: { show: h.num_heads <= 16, fontSize: 9, color: '#f3f4f7', formatter: (p) => p.value[2].toFixed(2) },
      }],
    }, { notMerge: true });
  }

  function renderExplain() {
    const x = data.explain;
    const columns = Array.from({ length: x.num_heads }, (_, h) => String(h)).concat([t('mlp')], explainHasBias ? [t('bias')] : []);
    const cells = [];
    let max = 0;
    for (let l = 0; l < x.num_layers; l += 1) {
      const row = x.heads[l].concat([x.mlp[l]], explainHasBias ? [x.o_bias[l]] : []);
      row.forEach((v, c) => {
        cells.push([c, l, v]);
        if (Math.abs(v) > max) max = Math.abs(v);
      });
    }
    // One part (often the last MLP) can dwarf the rest: the colours saturate at the 98th
    // percentile of |part|, so the smaller parts stay readable (labels and tooltips keep the values).
    const mags = cells.map((c) => Math.abs(c[2])).sort((u, v) => u - v);
    const span = mags[Math.floor(0.98 * (mags.length - 1))] || max || 1;
    explainChart.setOption({
      animation: false,
      grid: { left: 56, right: 90, top: 12, bottom: 48 },
      tooltip: {
        formatter: (p) => esc(t('explainTip', {
          l: p.value[1], part: p.value[0] < x.num_heads ? `${t('head')} ${p.value[0]}` : columns[p.value[0]],
          v: (p.value[2] >= 0 ? '+' : '') + p.value[2].toFixed(4),
        })),
      },
      xAxis: {
        type: 'category', data: columns, name: t('head'), nameLocation: 'middle', nameGap: 28,
        nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED },
      },
      yAxis: {
        type: 'category', data: Array.from({ length: x.num_layers }, (_, l) => String(l)), name: t('layerAxis'),
        nameLocation: 'middle', nameGap: 36, nameRotate: 90, nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED },
      },
      visualMap: {
        min: -span, max: span, calculable: true, precision: 2, right: 0, top: 'middle',
        inRange: { color: ['#3b82f6', '#1e3a5f', '#161b22', '#6b2a2a', '#f7768e'] }, textStyle: { color: MUTED },
      },
      series: [{
        type: 'heatmap', data: cells, progressive: 0,
        label: { show: columns.length <= 18, fontSize: 9, color: '#f3f4f7', formatter: (p) => p.value[2].toFixed(2) },
      }],
    }, { notMerge: true });
  }

  function select(pos) {
    selected = Math.max(0, Math.min(tokens.length - 1, pos));
    chipEls.forEach((c, i) => c.classList.toggle('selected', i === selected));
    renderCandidates();
    renderConfidence();
  }

  confChart.on('click', (p) => { if (Number.isInteger(p.dataIndex)) select(p.dataIndex); });
  layerSel.addEventListener('change', renderAttention);
  if (metricSel) metricSel.addEventListener('change', renderHeads);
  window.addEventListener('resize', () => {
    [candChart, confChart, attChart, lensChart, headsChart, explainChart].forEach((c) => c && c.resize());
    renderAttention();  // the square grid's side follows the width
  });
  select(selected);
  renderAttention();
  if (lensChart) renderLens();
  if (headsChart) renderHeads();
  if (explainChart) renderExplain();
  const focus = data.focus ? doc.getElementById(String(data.focus)) : null;  // run.show(view=...) in a notebook
  if (focus) focus.scrollIntoView();
  doc.body.dataset.ready = 'true';
}());
