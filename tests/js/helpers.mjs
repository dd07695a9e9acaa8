// Shared by the JS unit tests (not a test file itself: the runner only picks *.test.mjs).

/** A translator that shows the key and its variables, so a test can build the expected text. */
export const t = (key, vars) => (vars ? `${key}${JSON.stringify(vars)}` : key);

/** |a - b| < eps for numbers. */
export const near = (a, b, eps = 1e-9) => Math.abs(a - b) < eps;

/**
 * The least DOM the page modules touch when they are created: elements keep their listeners,
 * children, attributes and properties; getElementById hands out one element per id.
 */
export function fakeDoc() {
  const makeElement = (tag = 'div', id = null) => {
    const listeners = new Map();
    const classes = new Set();
    const attrs = new Map();
    const node = {
      tagName: tag.toUpperCase(),
      id,
      value: '',
      checked: false,
      hidden: false,
      disabled: false,
      textContent: '',
      className: '',
      children: [],
      dataset: {},
      style: { setProperty() {}, removeProperty() {} },
      classList: {
        add: (c) => classes.add(c),
        remove: (c) => classes.delete(c),
        toggle: (c, on) => { const v = on ?? !classes.has(c); if (v) classes.add(c); else classes.delete(c); return v; },
        contains: (c) => classes.has(c),
      },
      addEventListener: (type, fn) => {
        if (!listeners.has(type)) listeners.set(type, []);
        listeners.get(type).push(fn);
      },
      /** Call this element's listeners of `type` with a minimal event. */
      fire: (type, extra = {}) => {
        for (const fn of listeners.get(type) || []) fn({ target: node, preventDefault() {}, stopPropagation() {}, ...extra });
      },
      setAttribute: (k, v) => attrs.set(k, String(v)),
      getAttribute: (k) => (attrs.has(k) ? attrs.get(k) : null),
      removeAttribute: (k) => attrs.delete(k),
      append: (...c) => node.children.push(...c),
      replaceChildren: (...c) => { node.children = c; },
      querySelectorAll: () => [],
      querySelector: () => null,
      closest: () => null,
    };
    return node;
  };
  const byId = new Map();
  const doc = {
    body: makeElement('body'),
    defaultView: { addEventListener() {}, location: { href: 'http://x/', search: '' }, history: { replaceState() {} } },
    createElement: (tag) => makeElement(tag),
    createTextNode: (text) => ({ textContent: text }),
    createDocumentFragment: () => makeElement('#fragment'),
    getElementById: (id) => {
      if (!byId.has(id)) byId.set(id, makeElement('div', id));
      return byId.get(id);
    },
    querySelectorAll: () => [],
  };
  return doc;
}
