// UI strings in English and Simplified Chinese. Every visible string goes through t().
// Elements opt in with data-i18n (textContent), data-i18n-placeholder and data-i18n-title.

const STRINGS = {
  en: {
    'app.tagline': 'what a language model does while it generates',
    'lang.toggleTitle': 'Switch language',
    'lang.toggleLabel': '中文',

    'input.title': 'Prompt',
    'input.prompt': 'Prompt',
    'input.promptPlaceholder': 'Ask the model something…',
    'input.system': 'System prompt',
    'input.systemPlaceholder': 'Optional instructions for the model',

    'sampling.title': 'Sampling',
    'sampling.temperature': 'Temperature',
    'sampling.temperatureHint': '0 = greedy',
    'sampling.topK': 'Top-k',
    'sampling.topKHint': '0 = off',
    'sampling.topP': 'Top-p',
    'sampling.maxNewTokens': 'Max new tokens',
    'sampling.seed': 'Seed',
    'sampling.seedPlaceholder': 'random',
    'sampling.reuseSeed': "Reuse the last run's seed",

    'action.generate': 'Generate',
    'action.savePng': 'PNG',
    'action.savePngTitle': 'Save this chart as PNG',
    'status.generating': 'Generating…',

    'model.title': 'Model',
    'model.loading': 'Loading…',
    'model.unavailable': 'Model info unavailable',
    'model.name': 'Name',
    'model.architecture': 'Architecture',
    'model.layers': 'Layers',
    'model.heads': 'Heads',
    'model.kvHeads': 'KV heads',
    'model.hidden': 'Hidden size',
    'model.vocab': 'Vocabulary',
    'model.device': 'Device',
    'model.dtype': 'dtype',

    'conv.title': 'Conversation',
    'conv.colourBy': 'Colour by',
    'conv.keyPrompt': 'prompt',
    'conv.keyGenerated': 'generated',
    'conv.keyTemplate': 'template',
    'conv.keyHint': 'Click a token to inspect it · ← → to move',
    'conv.emptyTitle': 'No run yet',
    'conv.emptyText': 'Write a prompt and press Generate. Every token becomes a chip you can inspect.',
    'conv.generationStarts': 'generation',
    'conv.bytes': 'bytes',

    'metric.prob': 'Probability',
    'metric.entropy': 'Entropy',
    'metric.rank': 'Rank',
    'legend.prob.lo': 'likely',
    'legend.prob.hi': 'surprising',
    'legend.entropy.lo': '0 nats',
    'legend.rank.lo': 'rank 1',

    'tip.position': 'position',
    'tip.id': 'id',
    'tip.prob': 'prob',
    'tip.rank': 'rank',
    'tip.entropy': 'entropy',
    'tip.sampleProb': 'sample prob',
    'tip.bytes': 'bytes',
    'tip.source.prompt': 'prompt',
    'tip.source.generated': 'generated',
    'tip.segment.system': 'system',
    'tip.segment.user': 'user',
    'tip.segment.assistant': 'assistant',
    'tip.segment.template': 'template',
    'tip.special': 'special',
    'tip.partial': 'partial UTF-8',
    'tip.noStats': 'first token: no prediction',

    'sel.none': 'No token selected',
    'sel.position': 'Position {pos}',

    'tab.attention': 'Attention',
    'tab.probs': 'Probabilities',
    'tab.entropy': 'Entropy',
    'tab.similarity': 'Hidden states',
    'tab.projection': 'Projection',

    'ctl.layer': 'Layer',
    'ctl.head': 'Head',
    'ctl.scale': 'Scale',
    'ctl.topN': 'Top N',
    'head.mean': 'Mean of heads',
    'head.max': 'Max of heads',
    'head.n': 'Head {h} (KV {kv})',
    'layer.embeddings': '0 · embeddings',
    'layer.n': 'Layer {l}',
    'scale.sqrt': '√ weight',
    'scale.linear': 'linear',
    'scale.log': 'log',
    'ctl.range': 'Show',
    'range.all': 'whole sequence',
    'range.window': '128 around selection',
    'attn.pooled': 'max-pooled {f}×{f}',
    'attn.window': 'window {a}–{b} at full resolution',

    'view.empty': 'Generate something to see the views.',
    'view.loading': 'Loading…',
    'view.pickToken': 'Select a generated or prompt token (not position 0).',

    'attn.caption': 'Layer {layer} · {head} · rows are queries, columns are keys · {n} tokens',
    'attn.query': 'query',
    'attn.key': 'key',
    'attn.weight': 'weight',
    'attn.xName': 'key (attended to)',
    'attn.yName': 'query (attending)',

    'probs.raw': 'model probability',
    'probs.sample': 'sampling probability',
    'probs.chosen': 'chosen',
    'probs.cutMass': 'Cut by top-k / top-p: {mass}',
    'probs.cutMassNone': 'Prompt token (teacher-forced): no sampling',
    'probs.caption': 'Position {pos} · chosen {tok} · p = {prob} · rank {rank} · H = {ent} nats',
    'probs.xName': 'probability',

    'entropy.note': 'Click the chart to select a position',
    'entropy.entropy': 'entropy (nats)',
    'entropy.sampleEntropy': 'sampling entropy',
    'entropy.confidence': 'confidence (p of chosen)',
    'entropy.boundary': 'generated',
    'entropy.caption': 'Mean entropy, generated tokens: {ent} nats · mean confidence: {conf}',
    'entropy.position': 'position',

    'similarity.note': 'cos(hₗ, hₗ₊₁): how much each layer changes the residual stream',
    'similarity.perLayer': 'mean cosine, layer l → l+1',
    'similarity.perToken': 'per token',
    'similarity.layer': 'layer',
    'similarity.token': 'token',
    'similarity.caption': 'Lowest similarity at layer {l} → {l1} ({v}): the layer that changes the state most',

    'projection.prompt': 'prompt tokens',
    'projection.generated': 'generated tokens',
    'projection.selected': 'selected',
    'projection.path': 'generation path',
    'projection.variance': 'explained variance: PC1 {v1} · PC2 {v2}',
    'projection.caption': 'PCA of layer {layer} hidden states ({n} tokens)',
    'projection.embeddings': 'embeddings',
    'projection.offScale': 'off-scale',
    'projection.offScaleTip': 'far outside the bulk: drawn at the edge',
    'projection.offScaleNote': '{k} outlier(s) drawn at the edge: {list}',

    'run.summary': '{n} tokens · {tps} tok/s · {reason}',
    'run.reason.eos': 'stopped at EOS',
    'run.reason.length': 'hit max tokens',

    'err.emptyPrompt': 'Please enter a prompt first.',
    'err.network': 'Could not reach the server: {msg}',
    'err.noEcharts': 'ECharts failed to load (/vendor/echarts.min.js).',
    'err.badNumber': '{field} must be a number.',
  },
  zh: {
    'app.tagline': '观察语言模型在生成时做了什么',
    'lang.toggleTitle': '切换语言',
    'lang.toggleLabel': 'EN',

    'input.title': '提示词',
    'input.prompt': '提示词',
    'input.promptPlaceholder': '向模型提问…',
    'input.system': '系统提示词',
    'input.systemPlaceholder': '可选：给模型的指令',

    'sampling.title': '采样',
    'sampling.temperature': '温度',
    'sampling.temperatureHint': '0 = 贪心解码',
    'sampling.topK': 'Top-k',
    'sampling.topKHint': '0 = 关闭',
    'sampling.topP': 'Top-p',
    'sampling.maxNewTokens': '最大生成 token 数',
    'sampling.seed': '随机种子',
    'sampling.seedPlaceholder': '随机',
    'sampling.reuseSeed': '使用上次运行的随机种子',

    'action.generate': '生成',
    'action.savePng': 'PNG',
    'action.savePngTitle': '将图表保存为 PNG',
    'status.generating': '正在生成…',

    'model.title': '模型',
    'model.loading': '加载中…',
    'model.unavailable': '无法获取模型信息',
    'model.name': '名称',
    'model.architecture': '架构',
    'model.layers': '层数',
    'model.heads': '注意力头',
    'model.kvHeads': 'KV 头',
    'model.hidden': '隐藏维度',
    'model.vocab': '词表大小',
    'model.device': '设备',
    'model.dtype': '数据类型',

    'conv.title': '对话',
    'conv.colourBy': '着色依据',
    'conv.keyPrompt': '提示词',
    'conv.keyGenerated': '生成',
    'conv.keyTemplate': '模板',
    'conv.keyHint': '点击 token 查看详情 · ← → 移动选择',
    'conv.emptyTitle': '尚无运行结果',
    'conv.emptyText': '输入提示词并点击"生成"。每个 token 都会成为可查看的标签。',
    'conv.generationStarts': '生成',
    'conv.bytes': '字节',

    'metric.prob': '概率',
    'metric.entropy': '熵',
    'metric.rank': '排名',
    'legend.prob.lo': '可能',
    'legend.prob.hi': '意外',
    'legend.entropy.lo': '0 奈特',
    'legend.rank.lo': '第 1 名',

    'tip.position': '位置',
    'tip.id': 'ID',
    'tip.prob': '概率',
    'tip.rank': '排名',
    'tip.entropy': '熵',
    'tip.sampleProb': '采样概率',
    'tip.bytes': '字节',
    'tip.source.prompt': '提示词',
    'tip.source.generated': '生成',
    'tip.segment.system': '系统',
    'tip.segment.user': '用户',
    'tip.segment.assistant': '助手',
    'tip.segment.template': '模板',
    'tip.special': '特殊 token',
    'tip.partial': '不完整的 UTF-8',
    'tip.noStats': '第一个 token：无预测',

    'sel.none': '未选择 token',
    'sel.position': '位置 {pos}',

    'tab.attention': '注意力',
    'tab.probs': '概率',
    'tab.entropy': '熵',
    'tab.similarity': '隐藏状态',
    'tab.projection': '投影',

    'ctl.layer': '层',
    'ctl.head': '头',
    'ctl.scale': '刻度',
    'ctl.topN': '前 N 个',
    'head.mean': '所有头的平均',
    'head.max': '所有头的最大值',
    'head.n': '头 {h}（KV {kv}）',
    'layer.embeddings': '0 · 词嵌入',
    'layer.n': '第 {l} 层',
    'scale.sqrt': '√ 权重',
    'scale.linear': '线性',
    'scale.log': '对数',
    'ctl.range': '范围',
    'range.all': '整个序列',
    'range.window': '所选位置附近 128 个',
    'attn.pooled': '{f}×{f} 最大池化',
    'attn.window': '窗口 {a}–{b}（全分辨率）',

    'view.empty': '生成后即可查看各个视图。',
    'view.loading': '加载中…',
    'view.pickToken': '请选择一个 token（位置 0 除外）。',

    'attn.caption': '第 {layer} 层 · {head} · 行为查询，列为键 · {n} 个 token',
    'attn.query': '查询',
    'attn.key': '键',
    'attn.weight': '权重',
    'attn.xName': '键（被关注）',
    'attn.yName': '查询（发出关注）',

    'probs.raw': '模型概率',
    'probs.sample': '采样概率',
    'probs.chosen': '选中',
    'probs.cutMass': 'top-k / top-p 截去的概率：{mass}',
    'probs.cutMassNone': '提示词 token（教师强制）：未采样',
    'probs.caption': '位置 {pos} · 选中 {tok} · p = {prob} · 排名 {rank} · 熵 = {ent} 奈特',
    'probs.xName': '概率',

    'entropy.note': '点击图表以选择位置',
    'entropy.entropy': '熵（奈特）',
    'entropy.sampleEntropy': '采样分布的熵',
    'entropy.confidence': '置信度（选中 token 的概率）',
    'entropy.boundary': '生成部分',
    'entropy.caption': '生成 token 的平均熵：{ent} 奈特 · 平均置信度：{conf}',
    'entropy.position': '位置',

    'similarity.note': 'cos(hₗ, hₗ₊₁)：每一层对残差流的改变程度',
    'similarity.perLayer': '平均余弦相似度，第 l 层 → 第 l+1 层',
    'similarity.perToken': '逐 token',
    'similarity.layer': '层',
    'similarity.token': 'token',
    'similarity.caption': '相似度最低处：第 {l} → {l1} 层（{v}），即改变状态最多的一层',

    'projection.prompt': '提示词 token',
    'projection.generated': '生成的 token',
    'projection.selected': '已选择',
    'projection.path': '生成路径',
    'projection.variance': '解释方差：PC1 {v1} · PC2 {v2}',
    'projection.caption': '第 {layer} 层隐藏状态的 PCA（{n} 个 token）',
    'projection.embeddings': '词嵌入',
    'projection.offScale': '超出范围',
    'projection.offScaleTip': '远离主体：画在边缘',
    'projection.offScaleNote': '{k} 个离群点画在边缘：{list}',

    'run.summary': '{n} 个 token · {tps} token/秒 · {reason}',
    'run.reason.eos': '遇到结束符',
    'run.reason.length': '达到最大长度',

    'err.emptyPrompt': '请先输入提示词。',
    'err.network': '无法连接服务器：{msg}',
    'err.noEcharts': 'ECharts 加载失败（/vendor/echarts.min.js）。',
    'err.badNumber': '{field} 必须是数字。',
  },
};

export const LANGS = Object.freeze(['en', 'zh']);
const HTML_LANG = { en: 'en', zh: 'zh-CN' };
const STORAGE_KEY = 'llmvis.lang';

/** Pick the initial language: a saved choice, else navigator.language (zh* → zh). */
export function detectLang(navigatorLang, saved) {
  if (saved && LANGS.includes(saved)) return saved;
  return String(navigatorLang || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

/** Replace {name} placeholders. Pure. */
export function format(template, vars = {}) {
  return template.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

/** Create a translator. Returns {t, lang, setLang, apply, onChange}. */
export function createI18n(win = globalThis) {
  let saved = null;
  try { saved = win.localStorage?.getItem(STORAGE_KEY); } catch { saved = null; }
  let lang = detectLang(win.navigator?.language, saved);
  const listeners = new Set();

  const t = (key, vars) => {
    const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
    return vars ? format(s, vars) : s;
  };

  const apply = (root = win.document) => {
    root.documentElement && (root.documentElement.lang = HTML_LANG[lang]);
    for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
    for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  };

  const setLang = (next) => {
    if (!LANGS.includes(next) || next === lang) return;
    lang = next;
    try { win.localStorage?.setItem(STORAGE_KEY, lang); } catch { /* storage may be disabled */ }
    for (const fn of listeners) fn(lang);
  };

  return {
    t,
    apply,
    setLang,
    get lang() { return lang; },
    onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); },
  };
}
