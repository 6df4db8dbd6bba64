// Tierwise dashboard: polls /dashboard/data and draws inline SVG charts.
// Values from the server are written with textContent only, never parsed as HTML.
(function () {
  "use strict";

  const POLL_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TIER_COLORS = { edge: "#2a9d8f", mid: "#e9a23b", frontier: "#6d4bd8", none: "#9aa3b2" };
  const CURVE_COLORS = ["#2a6fdb", "#c0392b", "#1e8c4e", "#8e44ad", "#d35400", "#7f8c8d"];
  const PAD = { left: 52, right: 16, top: 12, bottom: 28 };
  // A young process has few minutes to show. Each chart keeps room for at least this many,
  // so its bars stay narrow and the series starts at the left edge with the process.
  const MIN_SLOTS = 15;

  // Formatting -----------------------------------------------------------------------------

  function usd(value) {
    if (value === null || value === undefined) return "–";
    const size = Math.abs(value);
    if (size === 0) return "$0";
    // The sign goes before the currency symbol: -$0.04, not $-0.04.
    const sign = value < 0 ? "-$" : "$";
    if (size >= 100) return sign + size.toFixed(0);
    if (size >= 1) return sign + size.toFixed(2);
    if (size < 1e-4) return sign + size.toExponential(2);
    return sign + Number(size.toPrecision(3)).toString();
  }

  function percent(share) {
    return share === null || share === undefined ? "–" : (share * 100).toFixed(1) + "%";
  }

  function count(value) {
    return value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en-US");
  }

  function number(value, digits) {
    return value === null || value === undefined ? "–" : value.toFixed(digits);
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function clock(unixSeconds) {
    const time = new Date(unixSeconds * 1000);
    return String(time.getHours()).padStart(2, "0") + ":" + String(time.getMinutes()).padStart(2, "0");
  }

  // DOM and SVG helpers --------------------------------------------------------------------

  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  function svgNode(tag, attributes, parent) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function svgText(parent, x, y, text, anchor) {
    const node = svgNode("text", { x: x, y: y, "text-anchor": anchor || "middle" }, parent);
    node.textContent = text;
    return node;
  }

  function newChart(containerId, width, height) {
    const container = document.getElementById(containerId);
    container.replaceChildren();
    const svg = svgNode("svg", { viewBox: "0 0 " + width + " " + height, role: "img" }, container);
    return { svg: svg, width: width, height: height };
  }

  function emptyChart(chart, message) {
    svgText(chart.svg, chart.width / 2, chart.height / 2, message).setAttribute("class", "empty");
  }

  // Pick a grid step of 1, 2 or 5 times a power of ten that splits the range into at most
  // five parts, and round the maximum up to a whole number of steps.
  function niceScale(value, wholeSteps) {
    const target = value > 0 ? value / 5 : 0.2;
    const power = Math.pow(10, Math.floor(Math.log10(target)));
    let step = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= target; });
    if (wholeSteps) step = Math.max(1, step);
    return { max: Math.max(step, Math.ceil(value / step - 1e-9) * step), step: step };
  }

  function drawGrid(chart, scale, format) {
    const plotHeight = chart.height - PAD.top - PAD.bottom;
    const parts = Math.round(scale.max / scale.step);
    for (let i = 0; i <= parts; i++) {
      const y = PAD.top + plotHeight - (plotHeight * i) / parts;
      svgNode("line", { x1: PAD.left, x2: chart.width - PAD.right, y1: y, y2: y, class: "gridline" }, chart.svg);
      svgText(chart.svg, PAD.left - 6, y + 4, format(scale.step * i), "end");
    }
  }

  function slotCount(minutes) {
    return Math.max(minutes.length, MIN_SLOTS);
  }

  function drawTimeAxis(chart, minutes) {
    const plotWidth = chart.width - PAD.left - PAD.right;
    const every = Math.max(1, Math.ceil(slotCount(minutes) / 8));
    minutes.forEach(function (minute, i) {
      if ((minutes.length - 1 - i) % every !== 0) return;
      const x = PAD.left + (plotWidth * (i + 0.5)) / slotCount(minutes);
      svgText(chart.svg, x, chart.height - 8, clock(minute.minute));
    });
  }

  // Charts ---------------------------------------------------------------------------------

  function visibleTiers(data) {
    const tiers = data.tiers.slice();
    for (const tier of Object.keys(data.totals.by_tier)) {
      if (!tiers.includes(tier)) tiers.push(tier);
    }
    return tiers;
  }

  function drawTierMix(data) {
    const chart = newChart("chart-tiers", 1200, 240);
    const minutes = data.minutes;
    const tiers = visibleTiers(data);
    const scale = niceScale(Math.max(0, ...minutes.map(function (m) { return m.requests; })), true);
    drawGrid(chart, scale, count);
    const plotWidth = chart.width - PAD.left - PAD.right;
    const plotHeight = chart.height - PAD.top - PAD.bottom;
    const slot = plotWidth / slotCount(minutes);
    minutes.forEach(function (minute, i) {
      let base = PAD.top + plotHeight;
      for (const tier of tiers) {
        const n = minute.by_tier[tier] || 0;
        if (n === 0) continue;
        const height = (plotHeight * n) / scale.max;
        base -= height;
        const bar = svgNode("rect", {
          x: PAD.left + i * slot + slot * 0.15, y: base, width: slot * 0.7, height: height,
          fill: TIER_COLORS[tier] || TIER_COLORS.none, "data-tier": tier,
        }, chart.svg);
        svgNode("title", {}, bar).textContent = clock(minute.minute) + " " + tier + ": " + n;
      }
    });
    drawTimeAxis(chart, minutes);
    if (data.totals.requests === 0) emptyChart(chart, "No requests yet");
    drawTierLegend(data, tiers);
  }

  function drawTierLegend(data, tiers) {
    const legend = document.getElementById("tier-legend");
    legend.replaceChildren();
    const total = data.totals.requests;
    for (const tier of tiers) {
      const n = data.totals.by_tier[tier] || 0;
      const item = document.createElement("li");
      item.setAttribute("data-tier", tier);
      const swatch = document.createElement("span");
      swatch.className = "swatch " + tier;
      const label = document.createElement("span");
      label.textContent = tier;
      const figure = document.createElement("span");
      figure.className = "count";
      figure.textContent = count(n) + (total ? " (" + percent(n / total) + ")" : "");
      item.append(swatch, label, figure);
      legend.appendChild(item);
    }
  }

  function drawLines(chartId, minutes, series, scale, format) {
    const chart = newChart(chartId, 600, 220);
    drawGrid(chart, scale, format);
    const plotWidth = chart.width - PAD.left - PAD.right;
    const plotHeight = chart.height - PAD.top - PAD.bottom;
    for (const line of series) {
      const points = [];
      // A cumulative line starts at the left edge with its value before the first minute,
      // so that a series of one minute still draws a segment.
      if (line.start !== undefined) {
        const y = PAD.top + plotHeight - (plotHeight * line.start) / scale.max;
        points.push(PAD.left.toFixed(1) + "," + y.toFixed(1));
      }
      line.values.forEach(function (value, i) {
        if (value === null) return;
        const x = PAD.left + (plotWidth * (i + 0.5)) / slotCount(minutes);
        const y = PAD.top + plotHeight - (plotHeight * value) / scale.max;
        points.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      if (points.length === 1) points.push(points[0]);
      svgNode("polyline", {
        points: points.join(" "), fill: "none", stroke: line.color, "stroke-width": 2,
        "stroke-linejoin": "round", "data-series": line.name,
      }, chart.svg);
    }
    drawTimeAxis(chart, minutes);
    return chart;
  }

  function drawCost(data) {
    // Start from what was spent before the first shown minute, so the lines match the totals.
    const inWindow = { cost: 0, baseline: 0 };
    for (const m of data.minutes) { inWindow.cost += m.cost_usd; inWindow.baseline += m.baseline_cost_usd; }
    let cost = data.totals.cost_usd - inWindow.cost;
    let baseline = data.totals.baseline_cost_usd - inWindow.baseline;
    const costStart = cost, baselineStart = baseline;
    const costs = [], baselines = [];
    for (const m of data.minutes) {
      cost += m.cost_usd; baseline += m.baseline_cost_usd;
      costs.push(cost); baselines.push(baseline);
    }
    const scale = niceScale(Math.max(0, ...costs, ...baselines), false);
    const chart = drawLines("chart-cost", data.minutes, [
      { name: "baseline", color: "#c0392b", values: baselines, start: baselineStart },
      { name: "actual", color: "#2a6fdb", values: costs, start: costStart },
    ], scale, usd);
    if (data.totals.requests === 0) emptyChart(chart, "No requests yet");
  }

  function drawCache(data) {
    const chart = newChart("chart-cache", 600, 220);
    drawGrid(chart, { max: 1, step: 0.25 }, function (v) { return Math.round(v * 100) + "%"; });
    const plotWidth = chart.width - PAD.left - PAD.right;
    const plotHeight = chart.height - PAD.top - PAD.bottom;
    const slot = plotWidth / slotCount(data.minutes);
    data.minutes.forEach(function (minute, i) {
      if (minute.cache_hit_rate === null) return;
      const height = Math.max(1, plotHeight * minute.cache_hit_rate);
      const bar = svgNode("rect", {
        x: PAD.left + i * slot + slot * 0.15, y: PAD.top + plotHeight - height, width: slot * 0.7,
        height: height, fill: "#2a9d8f", "data-series": "cache_hit_rate",
      }, chart.svg);
      svgNode("title", {}, bar).textContent = clock(minute.minute) + ": " + percent(minute.cache_hit_rate) +
        " of " + count(minute.requests) + " requests";
    });
    drawTimeAxis(chart, data.minutes);
    if (data.totals.requests === 0) emptyChart(chart, "No requests yet");
  }

  function drawEvaluation(evaluation) {
    const chart = newChart("chart-evaluation", 600, 260);
    const legend = document.getElementById("curve-legend");
    legend.replaceChildren();
    if (evaluation.status !== "ok") {
      emptyChart(chart, evaluation.message || "no evaluation configured");
      return;
    }
    const all = evaluation.curves.flatMap(function (c) { return c.points; })
      .concat(evaluation.points.map(function (p) { return [p.cost_share, p.quality]; }));
    const xMax = Math.max(1, ...all.map(function (p) { return p[0]; })) * 1.05;
    const yLow = Math.max(0, Math.min(...all.map(function (p) { return p[1]; })) - 0.05);
    const yHigh = Math.min(1, Math.max(...all.map(function (p) { return p[1]; })) + 0.05);
    const plotWidth = chart.width - PAD.left - PAD.right;
    const plotHeight = chart.height - PAD.top - PAD.bottom - 12;
    const x = function (v) { return PAD.left + (plotWidth * v) / xMax; };
    const y = function (v) { return PAD.top + plotHeight - (plotHeight * (v - yLow)) / (yHigh - yLow || 1); };
    drawEvaluationAxes(chart, xMax, yLow, yHigh, x, y);
    evaluation.curves.forEach(function (curve, i) {
      const color = CURVE_COLORS[i % CURVE_COLORS.length];
      const points = curve.points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); });
      svgNode("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2, "data-router": curve.name }, chart.svg);
      addLegend(legend, color, curve.name + (curve.aiq === null || curve.aiq === undefined ? "" : " (AIQ " + number(curve.aiq, 3) + ")"));
    });
    for (const point of evaluation.points) {
      const tier = point.name.replace(/^always-/, "");
      svgNode("circle", { cx: x(point.cost_share), cy: y(point.quality), r: 4.5, fill: TIER_COLORS[tier] || "#333" }, chart.svg);
      // Labels near the right edge go on the left of their point, so they stay inside the chart.
      const leftSide = point.cost_share > xMax * 0.8;
      svgText(chart.svg, x(point.cost_share) + (leftSide ? -8 : 8), y(point.quality) + 4, point.name, leftSide ? "end" : "start");
    }
  }

  function drawEvaluationAxes(chart, xMax, yLow, yHigh, x, y) {
    for (let i = 0; i <= 4; i++) {
      const quality = yLow + ((yHigh - yLow) * i) / 4;
      svgNode("line", { x1: PAD.left, x2: chart.width - PAD.right, y1: y(quality), y2: y(quality), class: "gridline" }, chart.svg);
      svgText(chart.svg, PAD.left - 6, y(quality) + 4, quality.toFixed(2), "end");
    }
    const bottom = y(yLow);
    for (let share = 0; share <= xMax + 1e-9; share += 0.25) {
      svgText(chart.svg, x(share), bottom + 16, percent(share).replace(".0%", "%"));
    }
    svgText(chart.svg, (PAD.left + chart.width - PAD.right) / 2, chart.height - 2, "cost as a share of always-frontier cost");
  }

  function addLegend(legend, color, text) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    const label = document.createElement("span");
    label.textContent = text;
    item.append(swatch, label);
    legend.appendChild(item);
  }

  // Cards, table and header ----------------------------------------------------------------

  function fillHeader(data) {
    setText("fact-policy", data.policy.name + " @ " + data.policy.version);
    setText("fact-classifier", data.classifier.version || "–");
    setText("fact-redis", data.redis.replace("_", " "));
    setText("fact-uptime", duration(data.uptime_s));
    setText("fact-updated", clock(data.generated_at));
  }

  function fillCards(totals) {
    setText("stat-requests", count(totals.requests));
    const errorShare = totals.requests ? totals.errors / totals.requests : null;
    // Client errors (4xx) are counted apart, so that bad requests do not read as failures.
    const rejected = totals.rejected || 0;
    setText("stat-errors", count(totals.errors) + (totals.errors === 1 ? " error (" : " errors (") + percent(errorShare) + "), "
      + count(rejected) + " rejected (4xx)");
    setText("stat-cost", usd(totals.cost_usd));
    setText("stat-tokens", count(totals.tokens_in) + " tokens in, " + count(totals.tokens_out) + " out");
    setText("stat-baseline", usd(totals.baseline_cost_usd));
    setText("stat-savings", usd(totals.savings_usd));
    // Routing that costs more than the all-frontier baseline (a cheap tier priced above the
    // frontier tier, say) is a loss, so the card stops showing it in the colour of a gain.
    document.getElementById("stat-savings").closest(".card")
      .classList.toggle("loss", totals.savings_usd < 0);
    const share = totals.baseline_cost_usd > 0 ? totals.savings_usd / totals.baseline_cost_usd : null;
    setText("stat-savings-share", percent(share) + " of the baseline");
    setText("stat-cache", percent(totals.cache_hit_rate));
    setText("stat-cache-hits", count(totals.cache_hits) + " hits");
  }

  function fillValueTable(data) {
    const body = document.querySelector("#value-table tbody");
    body.replaceChildren();
    const tiers = visibleTiers(data).filter(function (tier) { return data.value[tier]; });
    for (const tier of tiers) {
      const value = data.value[tier];
      const row = document.createElement("tr");
      row.setAttribute("data-tier", tier);
      const cells = [tier, count(value.rated_requests), number(value.mean_quality, 3), usd(value.cost_usd),
        value.quality_per_usd === null ? "–" : count(value.quality_per_usd), number(value.quality_per_1k_tokens, 2)];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
    if (tiers.length === 0) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 6;
      cell.className = "empty";
      cell.textContent = "No feedback yet";
      row.appendChild(cell);
      body.appendChild(row);
    }
    const records = data.feedback.received === 1 ? " feedback record received; " : " feedback records received; ";
    setText("feedback-note", count(data.feedback.received) + records +
      count(data.feedback.unmatched) + " did not match a recent successful request of the same tenant.");
  }

  function fillCategoryTable(data) {
    const tiers = visibleTiers(data).filter(function (tier) { return tier !== "none"; });
    const head = document.querySelector("#category-table thead tr");
    head.replaceChildren();
    for (const title of ["Category"].concat(tiers, ["Total"])) {
      const cell = document.createElement("th");
      cell.textContent = title;
      head.appendChild(cell);
    }
    const body = document.querySelector("#category-table tbody");
    body.replaceChildren();
    const categories = Object.keys(data.categories).sort();
    for (const category of categories) {
      const counts = data.categories[category];
      const row = document.createElement("tr");
      row.setAttribute("data-category", category);
      const total = tiers.reduce(function (sum, tier) { return sum + (counts[tier] || 0); }, 0);
      const cells = [category];
      for (const tier of tiers) {
        const n = counts[tier] || 0;
        cells.push(count(n) + (total > 0 ? " (" + percent(n / total) + ")" : ""));
      }
      cells.push(count(total));
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
    if (categories.length === 0) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = tiers.length + 2;
      cell.className = "empty";
      cell.textContent = "No routed requests yet";
      row.appendChild(cell);
      body.appendChild(row);
    }
  }

  function render(data) {
    fillHeader(data);
    fillCards(data.totals);
    drawTierMix(data);
    drawCost(data);
    drawCache(data);
    fillCategoryTable(data);
    fillValueTable(data);
    drawEvaluation(data.evaluation);
    document.body.setAttribute("data-loaded", "true");
  }

  async function refresh() {
    const banner = document.getElementById("load-error");
    try {
      const response = await fetch("/dashboard/data", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      banner.hidden = true;
    } catch (error) {
      banner.textContent = "Could not load /dashboard/data (" + error.message + "); retrying every " + POLL_MS / 1000 + " s.";
      banner.hidden = false;
    }
  }

  refresh();
  setInterval(refresh, POLL_MS);
})();
