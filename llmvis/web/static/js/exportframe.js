// Saved charts carry what they show: a title (the view's name) above the chart, and below it the
// chart's caption and a line naming the model, the run and the selected position. One frame for
// the PNG (drawn on a canvas around the chart's image) and the SVG (the chart's SVG nested in a
// larger one, with the texts as <text>, escaped).

import { FONT, PALETTE } from './charts.js';

const TITLE_H = 34;
const LINE_H = 16;
const PAD = 14;

/** Split `text` into lines of at most `max` characters, at spaces where it can. Pure. */
export function wrapText(text, max) {
  const out = [];
  let line = '';
  for (const word of String(text || '').split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > max) {
      out.push(line);
      line = '';
    }
    let w = word;
    while (w.length > max) { // a very long word is cut
      if (line) { out.push(line); line = ''; }
      out.push(w.slice(0, max));
      w = w.slice(max);
    }
    line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return out;
}

/**
 * The frame's texts for the chart on show. s: the store's state; caption: the caption shown
 * under the chart; t: the translator. Returns {title, lines}. Pure.
 */
export function exportFrame(s, caption, t) {
  const meta = t('export.meta', {
    model: s.model?.name ?? s.run?.model?.name ?? '?',
    run: s.run?.run_id ?? '—',
    pos: s.selected ?? '—',
  });
  return { title: `llmvis · ${t(`tab.${s.view}`)}`, lines: [caption, meta].filter(Boolean) };
}

/** The frame's layout for a chart of width × height: band heights and wrapped lines. Pure. */
export function frameLayout(width, height, frame) {
  const max = Math.max(20, Math.floor((width - 2 * PAD) / 6.6));
  const lines = frame.lines.flatMap((l) => wrapText(l, max));
  const bottom = lines.length * LINE_H + PAD;
  return { top: TITLE_H, bottom, lines, total: TITLE_H + height + bottom };
}

const xml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;',
}[c]));

/** The chart's SVG text inside a taller SVG with the title and caption lines. Pure. */
export function frameSVG(svg, width, height, frame) {
  const { top, lines, total } = frameLayout(width, height, frame);
  const inner = String(svg).replace(/^\s*<\?xml[^>]*\?>\s*/, '').replace(/<svg\b/, `<svg x="0" y="${top}"`);
  const font = xml(FONT);
  const caption = lines.map((l, i) => `<text x="${PAD}" y="${top + height + LINE_H * (i + 1)}" fill="${PALETTE.muted}" `
    + `style="font-family:${font};font-size:12px">${xml(l)}</text>`).join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${width}" height="${total}" `
    + `viewBox="0 0 ${width} ${total}"><rect width="100%" height="100%" fill="${PALETTE.panel}"/>`
    + `<text x="${PAD}" y="${top - 12}" fill="${PALETTE.text}" style="font-family:${font};font-size:15px;font-weight:600">${xml(frame.title)}</text>`
    + `${inner}${caption}</svg>`;
}

/**
 * The chart's PNG (a data URL drawn at `ratio` pixels per CSS pixel) with the title and caption
 * drawn around it. Resolves with a PNG data URL.
 */
export async function framePNG(doc, url, width, height, ratio, frame) {
  const { top, lines, total } = frameLayout(width, height, frame);
  const img = await new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error('the chart image did not load'));
    im.src = url;
  });
  const canvas = doc.createElement('canvas');
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(total * ratio);
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.fillStyle = PALETTE.panel;
  g.fillRect(0, 0, width, total);
  g.fillStyle = PALETTE.text;
  g.font = `600 15px ${FONT}`;
  g.fillText(frame.title, PAD, top - 12);
  g.drawImage(img, 0, top, width, height);
  g.fillStyle = PALETTE.muted;
  g.font = `12px ${FONT}`;
  lines.forEach((l, i) => g.fillText(l, PAD, top + height + LINE_H * (i + 1)));
  return canvas.toDataURL('image/png');
}
