// One ECharts instance for the right panel: theme, resize, render bookkeeping, PNG export.
// After every completed render the container gets data-rendered="<view>:<counter>" and the
// page records performance.mark('llmvis:<view>-rendered'), so tests can wait on it.

/** Save `href` as `filename` through a temporary link (PNG, SVG, bundles, share HTML). */
export function download(doc, href, filename) {
  const a = doc.createElement('a');
  a.href = href;
  a.download = filename;
  a.rel = 'noopener';
  doc.body.append(a);
  a.click();
  a.remove();
}

export const PALETTE = Object.freeze({
  bg: '#12161c',
  panel: '#161b22',
  grid: '#232a33',
  axis: '#3a4350',
  text: '#c9d1db',
  muted: '#7d8896',
  faint: '#4b5563',
  accent: '#7aa2f7',
  accent2: '#e0af68',
  highlight: '#f7768e',
  green: '#9ece6a',
  prompt: '#7aa2f7',
  generated: '#e0af68',
});

// Font lists use single quotes: ECharts writes them into SVG style="…" attributes unescaped,
// where a double quote would end the attribute (an invalid SVG file).
export const FONT = "'Inter', 'IBM Plex Sans', system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif";
export const MONO = "'JetBrains Mono', 'IBM Plex Mono', ui-monospace, 'SFMono-Regular', Menlo, Consolas, 'DejaVu Sans Mono', 'WenQuanYi Micro Hei Mono', monospace";

const THEME_NAME = 'llmvis-dark';

function axisTheme() {
  return {
    axisLine: { lineStyle: { color: PALETTE.axis } },
    axisTick: { lineStyle: { color: PALETTE.axis } },
    axisLabel: { color: PALETTE.muted, fontFamily: FONT },
    splitLine: { lineStyle: { color: PALETTE.grid } },
    nameTextStyle: { color: PALETTE.muted, fontFamily: FONT },
  };
}

const THEME = {
  backgroundColor: 'transparent',
  color: [PALETTE.accent, PALETTE.accent2, PALETTE.green, PALETTE.highlight, '#bb9af7', '#7dcfff'],
  textStyle: { color: PALETTE.text, fontFamily: FONT },
  title: { textStyle: { color: PALETTE.text }, subtextStyle: { color: PALETTE.muted } },
  legend: { textStyle: { color: PALETTE.text } },
  tooltip: {
    backgroundColor: 'rgba(18, 22, 28, 0.96)',
    borderColor: '#323b47',
    borderWidth: 1,
    textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    extraCssText: 'box-shadow: 0 8px 24px rgba(0,0,0,.45); border-radius: 8px;',
  },
  categoryAxis: axisTheme(),
  valueAxis: axisTheme(),
  logAxis: axisTheme(),
  visualMap: { textStyle: { color: PALETTE.muted } },
  dataZoom: {
    borderColor: PALETTE.grid,
    textStyle: { color: PALETTE.muted },
    fillerColor: 'rgba(122, 162, 247, 0.12)',
    handleStyle: { color: PALETTE.accent, borderColor: PALETTE.accent },
    dataBackground: { lineStyle: { color: PALETTE.faint }, areaStyle: { color: PALETTE.grid } },
  },
};

let themeRegistered = false;

/**
 * Create the chart host on `container`.
 * Returns {chart, resize, render(view, option, meta), showMessage(text, view), savePNG(filename), on, zr}.
 */
export function createChartHost(container, { echarts, overlay, overlayText }) {
  if (!themeRegistered) {
    echarts.registerTheme(THEME_NAME, THEME);
    themeRegistered = true;
  }
  const chart = echarts.init(container, THEME_NAME, { renderer: 'canvas' });
  let counter = 0;
  let pendingView = null;
  let metaKeys = [];

  chart.on('finished', () => {
    if (!pendingView) return;
    counter += 1;
    const view = pendingView;
    pendingView = null;
    container.dataset.rendered = `${view}:${counter}`;
    performance.mark(`llmvis:${view}-rendered`);
  });

  const ro = new ResizeObserver(() => chart.resize());
  ro.observe(container);

  const setMeta = (meta) => {
    for (const k of metaKeys) container.removeAttribute(k);
    metaKeys = [];
    for (const [k, v] of Object.entries(meta || {})) {
      const attr = `data-${k}`;
      container.setAttribute(attr, String(v));
      metaKeys.push(attr);
    }
  };

  return {
    chart,
    resize: () => chart.resize(),
    /** Replace the chart with a new option for `view`; meta becomes data-* attributes. */
    render(view, option, meta) {
      overlay.hidden = true;
      container.dataset.view = view;
      setMeta(meta);
      pendingView = view;
      chart.setOption(option, { notMerge: true });
    },
    /** Clear the chart and show a centred message instead. */
    showMessage(text, view) {
      chart.clear();
      if (view) container.dataset.view = view;
      setMeta({});
      overlayText.textContent = text;
      overlay.hidden = false;
    },
    savePNG(filename) {
      const url = chart.getDataURL({ type: 'png', pixelRatio: 2, backgroundColor: PALETTE.panel });
      download(container.ownerDocument, url, filename);
      return url;
    },
    on: (...args) => chart.on(...args),
    zr: () => chart.getZr(),
  };
}

/** The tooltip settings every chart shares (kept inside the chart box). Pure. */
export function baseTooltip(extra = {}) {
  return { confine: true, appendToBody: false, ...extra };
}

/** Escape a string for ECharts rich-text/formatter HTML tooltips (they render HTML). */
export function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

/** Label interval so that at most `maxLabels` category labels are drawn. Pure. */
export function labelInterval(n, maxLabels) {
  return n <= maxLabels ? 0 : Math.ceil(n / maxLabels) - 1;
}

/**
 * A category axis of the model's layers, layer 0 on top (the head grid, the row view, the
 * explain bars, the patching heatmap). `name` is the axis title; `extra` is merged in (gridIndex,
 * nameGap). Pure.
 */
export function layerAxis(L, plotH, name, extra = {}) {
  return {
    type: 'category',
    data: Array.from({ length: L }, (_, l) => String(l)),
    inverse: true,
    name,
    nameLocation: 'middle',
    nameGap: 40,
    axisTick: { show: false },
    axisLine: { show: false },
    axisLabel: { fontFamily: MONO, fontSize: 10, interval: labelInterval(L, Math.floor(plotH / 13)) },
    ...extra,
  };
}

/**
 * Which category labels to draw: at most about `maxLabels` of `n`, every step-th one, but always
 * the selected index `sel` (when given), with its close neighbours hidden so that it never
 * overlaps them. Returns a function of the category index. Pure.
 */
export function labelPicker(n, maxLabels, sel = null) {
  const step = labelInterval(n, maxLabels) + 1;
  const hasSel = sel != null && sel >= 0 && sel < n;
  return (idx) => {
    if (hasSel && idx === sel) return true;
    if (step <= 1) return true;
    return idx % step === 0 && (!hasSel || Math.abs(idx - sel) >= step);
  };
}

/**
 * Category-axis data with the selected category styled as highlighted. ECharts passes a
 * colour callback the index among the *drawn* labels, not the category index, so a callback
 * highlights the wrong label once labels are thinned; a per-item textStyle cannot. Pure.
 */
export function highlightCategory(labels, sel, style = { color: PALETTE.highlight, fontWeight: 'bold' }) {
  return labels.map((value, i) => (i === sel ? { value, textStyle: style } : value));
}
