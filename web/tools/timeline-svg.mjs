#!/usr/bin/env node
// Draws a constrained-link timeline (web/tools/constrained-link.mjs --timeline, or the load
// tester's `switchboard loadtest … --timeline`) as an SVG: the server's estimate of the
// subscriber's link, what the subscriber received (kbit/s), and the width of the frames it
// decoded (the simulcast layer; the load tester's: received), over time, with the cap's events.
//
//   node web/tools/timeline-svg.mjs timeline.json docs/images/constrained-timeline.svg
import { readFileSync, writeFileSync } from 'node:fs';

const [input, output] = process.argv.slice(2);
if (!input || !output) throw new Error('usage: timeline-svg.mjs <timeline.json> <out.svg>');
const data = JSON.parse(readFileSync(input, 'utf8'));

const W = 900;
const H = 420;
const M = { left: 60, right: 70, top: 30, bottom: 50 };
const plotW = W - M.left - M.right;
const plotH = H - M.top - M.bottom;
const end = Math.max(...data.samples.map((s) => s.t), ...data.estimates.map((e) => e.t), 1);
const start = Math.min(...data.samples.map((s) => s.t), 0);
const topKbps = Math.max(...data.samples.map((s) => s.kbps), ...data.estimates.map((e) => e.estimateKbps), 100);
const kbpsMax = Math.ceil(topKbps / 250) * 250;
const widthMax = 1280;

const x = (t) => M.left + ((t - start) / (end - start)) * plotW;
const yKbps = (k) => M.top + plotH - (Math.min(k, kbpsMax) / kbpsMax) * plotH;
const yWidth = (w) => M.top + plotH - (w / widthMax) * plotH;
const fmt = (n) => n.toFixed(1);

const path = (points) => points.map(([px, py], i) => `${i ? 'L' : 'M'}${fmt(px)},${fmt(py)}`).join(' ');
/** A step line: each value holds until the next point. */
const steps = (points) => points.flatMap(([px, py], i) => (i ? [[px, points[i - 1][1]], [px, py]] : [[px, py]]));

const parts = [];
parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
// Grid and axes.
for (let k = 0; k <= kbpsMax; k += kbpsMax / 5) {
  parts.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${fmt(yKbps(k))}" y2="${fmt(yKbps(k))}" stroke="#eee"/>`);
  parts.push(`<text x="${M.left - 6}" y="${fmt(yKbps(k) + 4)}" text-anchor="end">${Math.round(k)}</text>`);
}
for (const w of [320, 640, 1280]) {
  parts.push(`<text x="${M.left + plotW + 6}" y="${fmt(yWidth(w) + 4)}" fill="#2a7">${w}</text>`);
}
for (let t = Math.ceil(start / 5) * 5; t <= end; t += 5) {
  parts.push(`<text x="${fmt(x(t))}" y="${M.top + plotH + 18}" text-anchor="middle">${t}</text>`);
}
parts.push(`<text x="${M.left + plotW / 2}" y="${H - 10}" text-anchor="middle">seconds</text>`);
parts.push(`<text x="14" y="${M.top + plotH / 2}" transform="rotate(-90 14 ${M.top + plotH / 2})" text-anchor="middle">kbit/s</text>`);
parts.push(`<text x="${W - 12}" y="${M.top + plotH / 2}" transform="rotate(90 ${W - 12} ${M.top + plotH / 2})" text-anchor="middle" fill="#2a7">decoded width</text>`);
parts.push(`<rect x="${M.left}" y="${M.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#888"/>`);
// Events (the cap set, lifted).
for (const e of data.events) {
  parts.push(`<line x1="${fmt(x(e.t))}" x2="${fmt(x(e.t))}" y1="${M.top}" y2="${M.top + plotH}" stroke="#999" stroke-dasharray="4 3"/>`);
  parts.push(`<text x="${fmt(x(e.t) + 4)}" y="${M.top + 14}" fill="#555">${e.what}</text>`);
}
// Series.
const received = data.samples.map((s) => [x(s.t), yKbps(s.kbps)]);
const estimate = steps(data.estimates.map((e) => [x(e.t), yKbps(e.estimateKbps)]));
const width = steps(data.samples.filter((s) => s.width > 0).map((s) => [x(s.t), yWidth(s.width)]));
parts.push(`<path d="${path(width)}" fill="none" stroke="#2a7" stroke-width="2" opacity="0.8"/>`);
parts.push(`<path d="${path(received)}" fill="none" stroke="#36c" stroke-width="1.5"/>`);
parts.push(`<path d="${path(estimate)}" fill="none" stroke="#d33" stroke-width="2"/>`);
// Legend.
const legend = [['#d33', 'server estimate of the link'], ['#36c', 'received by the subscriber'], ['#2a7', 'decoded width (layer)']];
legend.forEach(([color, label], i) => {
  const lx = M.left + 10 + i * 230;
  parts.push(`<line x1="${lx}" x2="${lx + 20}" y1="${M.top - 12}" y2="${M.top - 12}" stroke="${color}" stroke-width="3"/>`);
  parts.push(`<text x="${lx + 26}" y="${M.top - 8}">${label}</text>`);
});
parts.push('</svg>');
writeFileSync(output, `${parts.join('\n')}\n`);
console.log(`wrote ${output}: ${data.samples.length} samples, ${data.estimates.length} estimates, ${end.toFixed(1)} s`);
