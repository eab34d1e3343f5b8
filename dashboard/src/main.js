// The wattvisor dashboard: signs in with a token and reads the /v1 API.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";

const $ = (id) => document.getElementById(id);
const state = { token: "", me: null, project: "", server: "", charts: {} };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body?.error?.message || body?.detail || message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response.json();
}

function showError(message) {
  // A refused token shows the reason and nothing else.
  $("board").hidden = true;
  $("who").textContent = "";
  $("error").textContent = message;
  $("error").hidden = false;
  $("signin").hidden = false;
  document.body.dataset.state = "error";
}

const fmtWatts = (w) => `${w.toFixed(w < 10 ? 2 : 1)} W`;
function fmtJoules(j) {
  const wh = j / 3600;
  if (wh >= 1000) return `${(wh / 1000).toFixed(2)} kWh`;
  return `${wh.toFixed(wh < 10 ? 3 : 1)} Wh`;
}
// The source next to every figure: "estimate" when it comes from the CPU model.
const sourceLabel = (s) => (s && s !== "none" ? s : "no data");

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function secondsSinceMidnight() {
  const now = new Date();
  const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  return Math.max(1, Math.floor((now - midnight) / 1000));
}

function energyOver(points) {
  if (points.length < 2) return 0;
  return Math.max(0, points[points.length - 1].joules - points[0].joules);
}

function drawChart(key, element, points, label) {
  const xs = points.map((p) => p.taken_at);
  const ys = points.map((p) => p.watts);
  element.dataset.points = String(points.length);
  if (state.charts[key]) state.charts[key].destroy();
  element.textContent = "";
  if (points.length === 0) {
    element.textContent = "no history yet";
    state.charts[key] = null;
    return;
  }
  state.charts[key] = new uPlot(
    {
      width: Math.min(900, element.clientWidth || 900),
      height: 220,
      series: [{}, { label, stroke: "#d9480f", fill: "rgba(217,72,15,0.1)", value: (_u, v) => (v == null ? "" : fmtWatts(v)) }],
      axes: [{}, { values: (_u, ticks) => ticks.map((t) => `${t} W`) }],
    },
    [xs, ys],
    element,
  );
}

function drawMap(hosts) {
  const svg = $("map");
  const ns = "http://www.w3.org/2000/svg";
  svg.textContent = "";
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text) el.textContent = text;
    svg.appendChild(el);
    return el;
  };
  add("rect", { x: -180, y: -90, width: 360, height: 180, class: "sea" });
  for (let lon = -150; lon <= 150; lon += 30) add("line", { x1: lon, y1: -90, x2: lon, y2: 90, class: "grid" });
  for (let lat = -60; lat <= 60; lat += 30) add("line", { x1: -180, y1: -lat, x2: 180, y2: -lat, class: "grid" });
  add("line", { x1: -180, y1: 0, x2: 180, y2: 0, class: "equator" });
  for (const host of hosts) {
    const pair = (host.geolocation || [])[0];
    if (!pair) continue;
    const [lat, lon] = pair.split(",").map(Number);
    if (!Number.isFinite(lat) || !Number.isFinite(lon)) continue;
    const dot = add("circle", { cx: lon, cy: -lat, r: 3, class: "host-dot" });
    dot.dataset.host = host.name;
    const title = document.createElementNS(ns, "title");
    title.textContent = `${host.name} (${pair})`;
    dot.appendChild(title);
    add("text", { x: lon + 4, y: -lat + 1.5, class: "host-label" }, host.name);
  }
}

async function loadHosts() {
  const hosts = await api("/v1/hosts");
  const body = $("hosts").querySelector("tbody");
  body.textContent = "";
  const powers = await Promise.all(hosts.map((h) => api(`/v1/hosts/${h.id}/power`).catch(() => null)));
  hosts.forEach((host, i) => {
    const p = powers[i];
    const row = document.createElement("tr");
    row.dataset.host = host.id;
    cell(row, host.name);
    cell(row, host.state);
    cell(row, p ? fmtWatts(p.watts) : "–");
    cell(row, p ? fmtJoules(p.joules) : "–");
    cell(row, p ? sourceLabel(p.source) : "no data", "source");
    cell(row, (host.geolocation || []).join(" ") || "unknown");
    body.appendChild(row);
  });
  drawMap(hosts);
}

async function loadServerChart() {
  const windowS = Number($("window").value);
  const target = $("server-chart");
  if (!state.server) {
    target.textContent = "select a server";
    target.dataset.points = "0";
    return;
  }
  const points = await api(`/v1/servers/${state.server}/power/history?since=${windowS}`);
  const name = state.serverNames?.[state.server] || state.server;
  $("server-chart-title").textContent = `Server power: ${name}`;
  drawChart("server", target, points, name);
}

async function loadProject() {
  const project = state.project;
  const windowS = Number($("window").value);
  const today = secondsSinceMidnight();
  const [power, history, day, servers, powers, flavors, images] = await Promise.all([
    api(`/v1/projects/${encodeURIComponent(project)}/power`),
    api(`/v1/projects/${encodeURIComponent(project)}/power/history?since=${windowS}`),
    api(`/v1/projects/${encodeURIComponent(project)}/power/history?since=${today}&step=60`),
    api("/v1/servers"),
    api(`/v1/power/servers?project=${encodeURIComponent(project)}`),
    api("/v1/flavors"),
    api("/v1/images"),
  ]);
  const summary = $("project-summary");
  summary.textContent = "";
  const figure = (label, value, source) => {
    const div = document.createElement("div");
    div.className = "figure";
    div.innerHTML = `<span class="label"></span><span class="value"></span><span class="source"></span>`;
    div.children[0].textContent = label;
    div.children[1].textContent = value;
    div.children[2].textContent = sourceLabel(source);
    summary.appendChild(div);
  };
  figure(`Project ${project} now`, fmtWatts(power.watts), power.source);
  figure("Energy today", fmtJoules(energyOver(day)), power.source);
  figure("Servers", String(power.servers), power.source);
  drawChart("project", $("project-chart"), history, project);

  const flavorNames = Object.fromEntries(flavors.map((f) => [f.id, f.name]));
  const imageNames = Object.fromEntries(images.map((i) => [i.id, i.name]));
  const powerOf = Object.fromEntries(powers.map((p) => [p.id, p]));
  const mine = servers.filter((s) => s.project === project);
  state.serverNames = Object.fromEntries(mine.map((s) => [s.id, s.name]));
  if (!state.serverNames[state.server]) {
    const top = powers.find((p) => state.serverNames[p.id]);
    state.server = top ? top.id : mine[0]?.id || "";
  }
  const body = $("servers").querySelector("tbody");
  body.textContent = "";
  const isAdmin = state.me.role === "admin";
  const fragment = document.createDocumentFragment();
  for (const s of mine) {
    const p = powerOf[s.id];
    const row = document.createElement("tr");
    row.dataset.server = s.id;
    if (s.id === state.server) row.className = "selected";
    cell(row, s.name);
    cell(row, s.status);
    if (isAdmin) cell(row, s.host || "–");
    cell(row, flavorNames[s.flavor_id] || s.flavor_id);
    cell(row, imageNames[s.image_id] || s.image_id);
    cell(row, p ? fmtWatts(p.watts) : "–");
    cell(row, p ? fmtJoules(p.joules) : "–");
    cell(row, sourceLabel(p?.source), "source");
    row.addEventListener("click", () => {
      state.server = s.id;
      for (const r of body.querySelectorAll("tr.selected")) r.className = "";
      row.className = "selected";
      loadServerChart().catch(fail);
    });
    fragment.appendChild(row);
  }
  body.appendChild(fragment);
  await loadServerChart();
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    showError(`Token refused: ${error.message}`);
  } else {
    $("error").textContent = `Error: ${error.message}`;
    $("error").hidden = false;
  }
}

async function refresh() {
  document.body.dataset.state = "loading";
  const tasks = [loadProject()];
  if (state.me.role === "admin") tasks.push(loadHosts());
  await Promise.all(tasks);
  document.body.dataset.state = "ready";
}

async function signIn(token) {
  state.token = token.trim();
  $("error").hidden = true;
  if (!state.token) {
    showError("No token given: paste one, or load the file made by `wattvisor token create`.");
    return;
  }
  try {
    state.me = await api("/v1/me");
  } catch (error) {
    showError(`Token refused: ${error.message}`);
    return;
  }
  const isAdmin = state.me.role === "admin";
  document.body.classList.toggle("admin", isAdmin);
  $("who").textContent = `${state.me.user} (${state.me.role}, project ${state.me.project})`;
  const select = $("project");
  select.textContent = "";
  let projects = [state.me.project];
  if (isAdmin) {
    try {
      const listed = (await api("/v1/projects")).map((p) => p.name || p.id);
      projects = [...new Set([state.me.project, ...listed])];
    } catch (_) { /* the admin's own project still shows */ }
  }
  for (const name of projects) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }
  select.disabled = !isAdmin;
  state.project = projects.includes(state.project) ? state.project : projects[0];
  select.value = state.project;
  $("hosts-section").hidden = !isAdmin;
  $("signin").hidden = true;
  $("board").hidden = false;
  sessionStorage.setItem("wattvisor-token", state.token);
  try {
    await refresh();
  } catch (error) {
    fail(error);
  }
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("token").value);
});
$("token-file").addEventListener("change", async () => {
  const file = $("token-file").files[0];
  if (!file) return;
  const text = await file.text();
  // The file holds the token alone on a line, as `wattvisor token create` prints it.
  const line = text.split(/\s+/).find((t) => t.length > 0) || "";
  $("token").value = line;
  signIn(line);
});
$("project").addEventListener("change", () => {
  state.project = $("project").value;
  state.server = "";
  refresh().catch(fail);
});
$("window").addEventListener("change", () => refresh().catch(fail));
$("signout").addEventListener("click", () => {
  sessionStorage.removeItem("wattvisor-token");
  location.reload();
});

const saved = sessionStorage.getItem("wattvisor-token");
if (saved) signIn(saved);
