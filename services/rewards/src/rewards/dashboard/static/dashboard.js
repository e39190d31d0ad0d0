/* The marketers' dashboard. Programmes come from GET /v1/programs, figures from
 * GET /v1/programs/{id}/stats, the review queue from /dashboard/api/programs/{id}/review-queue;
 * figures and queue are read again every 2.5 s while the page is visible, so new events show
 * within seconds without a reload. The session cookie authenticates every call; writes add
 * the page's CSRF token. Numbers and money are formatted for the programme's locale and
 * currency (Intl). Only this file and uPlot run on the page (CSP script-src 'self'); text
 * goes in with textContent, never as HTML. */
(function () {
  "use strict";

  var REFRESH_MS = 2500;
  var HIDDEN_REFRESH_MS = 10000;
  var DAY_MS = 86400000;
  var CSRF = document.querySelector('meta[name="csrf-token"]').content;
  var REASONS = {
    unknown_code: "Unknown code",
    inactive_code: "Inactive code",
    outside_window: "Outside the attribution window",
    self_referral: "Self-referral",
    existing_customer: "Existing customer",
    duplicate: "Duplicate conversion",
  };
  var STATUSES = [["pending", "Pending (hold period)"], ["in_review", "In review"],
    ["approved", "Approved"], ["rejected", "Rejected"], ["reversed", "Reversed"]];
  var STAGES = { clicks: "Clicks", conversions: "Conversions", attributed: "Attributed",
    rewarded: "Rewarded" };

  var state = {
    programs: [], program: null, from: null, to: null, fmt: null,
    generation: 0, timer: null, charts: [], chartKey: null, rendered: {}, rejecting: null,
  };

  function $(id) { return document.getElementById(id); }
  function enc(text) { return encodeURIComponent(text); }
  function isoDay(date) { return date.toISOString().slice(0, 10); }

  // ---- formatting -------------------------------------------------------------------------
  function formatters(program) {
    var locale = (program.locale || "en").replace("_", "-");
    var money = new Intl.NumberFormat(locale, { style: "currency", currency: program.currency });
    var compactMoney = new Intl.NumberFormat(locale, {
      style: "currency", currency: program.currency, notation: "compact" });
    var scale = Math.pow(10, money.resolvedOptions().maximumFractionDigits);
    var count = new Intl.NumberFormat(locale);
    var compact = new Intl.NumberFormat(locale, { notation: "compact" });
    var pct = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 });
    var day = new Intl.DateTimeFormat(locale, { timeZone: "UTC", day: "numeric", month: "short" });
    var longDay = new Intl.DateTimeFormat(locale, {
      timeZone: "UTC", weekday: "short", day: "numeric", month: "short", year: "numeric" });
    var moment = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });
    return {
      count: function (n) { return count.format(n); },
      compact: function (n) { return compact.format(n); },
      pct: function (r) { return r === null || r === undefined ? "–" : pct.format(r); },
      money: function (minor) { return money.format(minor / scale); },
      major: function (minor) { return minor / scale; },
      majorMoney: function (major) { return money.format(major); },
      compactMoney: function (major) { return compactMoney.format(major); },
      day: function (date) { return day.format(date); },
      longDay: function (iso) { return longDay.format(new Date(iso + "T00:00:00Z")); },
      moment: function (iso) { return moment.format(new Date(iso)); },
      reward: function (r) {
        return r.kind === "points" ? count.format(r.amount) + " points"
          : money.format(r.amount / scale) + " " + r.kind;
      },
    };
  }

  // ---- API --------------------------------------------------------------------------------
  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.body) headers["Content-Type"] = "application/json";
    if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = CSRF;
    return fetch(path, {
      method: options.method || "GET", body: options.body, headers: headers,
      credentials: "same-origin", cache: "no-store",
    }).then(function (response) {
      if (response.status === 401) {
        window.location.assign("/dashboard/login");
        throw new Error("the session ended; log in again");
      }
      var type = response.headers.get("content-type") || "";
      var body = type.indexOf("json") >= 0 ? response.json() : Promise.resolve(null);
      return body.then(function (data) {
        if (!response.ok) {
          throw new Error((data && data.detail) || response.status + " " + response.statusText);
        }
        return data;
      });
    });
  }

  // ---- small DOM helpers ------------------------------------------------------------------
  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }
  function cell(text, options) {
    options = options || {};
    var td = el(options.header ? "th" : "td", text, options.num ? "num" : "");
    if (options.header) td.scope = "row";
    if (options.small) td.appendChild(el("span", options.small, "small"));
    return td;
  }
  function fillRows(table, rows, empty, toCells) {
    var tbody = $(table).tBodies[0];
    var columns = $(table).tHead.rows[0].cells.length;
    tbody.replaceChildren();
    if (!rows.length) {
      var td = el("td", empty, "empty");
      td.colSpan = columns;
      tbody.appendChild(el("tr")).appendChild(td);
      return;
    }
    rows.forEach(function (row) {
      var tr = el("tr");
      toCells(row).forEach(function (td) { tr.appendChild(td); });
      tbody.appendChild(tr);
    });
  }
  function setText(id, text, title) {
    var node = $(id);
    node.textContent = text;
    if (title) node.title = title; else node.removeAttribute("title");
  }
  function showError(message) { $("error").textContent = message || ""; }
  function announce(message) { $("announce").textContent = message; }
  function changed(part, data) {
    var json = JSON.stringify(data);
    if (state.rendered[part] === json) return false;
    state.rendered[part] = json;
    return true;
  }

  // ---- figures ----------------------------------------------------------------------------
  function renderKpis(s, f) {
    setText("kpi-clicks", f.count(s.clicks));
    setText("kpi-conversions", f.count(s.conversions));
    setText("kpi-attributed", f.count(s.attributed));
    setText("kpi-conversion-rate", f.pct(s.conversion_rate),
      s.conversion_rate === null ? "No clicks in this range" : "Attributed ÷ clicks");
    setText("kpi-revenue", f.money(s.revenue));
    setText("kpi-reward-cost", f.money(s.reward_cost));
    var points = $("kpi-reward-points");
    points.hidden = !s.reward_points;
    points.textContent = s.reward_points ? "+ " + f.count(s.reward_points) + " points" : "";
    setText("kpi-roi", f.pct(s.roi), s.roi === null ? "Nothing spent on rewards in this range"
      : "(revenue − reward cost) ÷ reward cost");
  }

  function renderFunnel(s, f) {
    var list = $("funnel");
    list.replaceChildren();
    var top = Math.max(1, s.funnel.length ? s.funnel[0].count : 1);
    s.funnel.forEach(function (stage, i) {
      var item = el("li");
      item.dataset.stage = stage.stage;
      // The spaces between the parts are for screen readers (a grid ignores them).
      item.append(el("span", STAGES[stage.stage] || stage.stage, "label"), " ");
      var value = el("span", f.count(stage.count), "value");
      var previous = i ? s.funnel[i - 1] : null;
      if (previous && previous.count) {
        value.append(" ", el("span", f.pct(stage.count / previous.count) + " of "
          + (STAGES[previous.stage] || previous.stage).toLowerCase(), "share"));
      }
      item.appendChild(value);
      var track = el("span", null, "track");
      var bar = el("span", null, "bar");
      bar.style.width = Math.min(100, (100 * stage.count) / top) + "%";
      track.appendChild(bar);
      track.setAttribute("aria-hidden", "true");
      item.appendChild(track);
      list.appendChild(item);
    });
  }

  function renderTables(s, f) {
    fillRows("daily", s.daily.slice().reverse(), "No days in this range.", function (d) {
      return [cell(f.longDay(d.date), { header: true }), cell(f.count(d.clicks), { num: true }),
        cell(f.count(d.conversions), { num: true }), cell(f.count(d.attributed), { num: true }),
        cell(f.count(d.rewarded), { num: true }), cell(f.money(d.revenue), { num: true }),
        cell(f.money(d.reward_cost), { num: true })];
    });
    fillRows("channels", s.by_channel, "No clicks or conversions in this range.", function (c) {
      return [cell(c.channel === "none" ? "none (rejected)" : c.channel, { header: true }),
        cell(f.count(c.clicks), { num: true }), cell(f.count(c.conversions), { num: true }),
        cell(f.count(c.attributed), { num: true }),
        cell(f.pct(c.clicks ? c.attributed / c.clicks : null), { num: true }),
        cell(f.money(c.revenue), { num: true })];
    });
    fillRows("referrers", s.top_referrers, "No referrer brought clicks in this range.",
      function (r) {
        return [cell(r.name || r.external_id, { header: true, small: r.email }), cell(r.code),
          cell(f.count(r.clicks), { num: true }), cell(f.count(r.attributed), { num: true }),
          cell(f.money(r.revenue), { num: true }), cell(f.money(r.reward_cost), { num: true })];
      });
    var reasons = Object.keys(s.rejected_by_reason).sort(function (a, b) {
      return s.rejected_by_reason[b] - s.rejected_by_reason[a] || (a < b ? -1 : 1);
    });
    fillRows("rejections", reasons, "No conversion was rejected in this range.", function (r) {
      return [cell(REASONS[r] || r, { header: true }),
        cell(f.count(s.rejected_by_reason[r]), { num: true })];
    });
    fillRows("statuses", STATUSES, "", function (pair) {
      return [cell(pair[1], { header: true }),
        cell(f.count(s.rewards_by_status[pair[0]] || 0), { num: true })];
    });
  }

  // ---- charts (uPlot) ---------------------------------------------------------------------
  function chartOptions(node, f, series, valueText, axisText) {
    return {
      width: Math.max(280, node.clientWidth), height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      legend: { live: true },
      series: [{ label: "Day", value: function (u, ts) {
        return ts === null ? "–" : f.day(new Date(ts * 1e3)); } }].concat(series.map(
        function (item) {
          return { label: item[0], stroke: item[1], width: 2, points: { show: false },
            value: function (u, v) { return v === null ? "–" : valueText(v); } };
        })),
      axes: [
        { values: function (u, splits) {
          return splits.map(function (ts) { return f.day(new Date(ts * 1e3)); }); } },
        { size: 64, values: function (u, splits) { return splits.map(axisText); } },
      ],
    };
  }

  function renderCharts(s, f) {
    if (typeof uPlot === "undefined") return;
    var xs = s.daily.map(function (d) { return Date.parse(d.date + "T00:00:00Z") / 1000; });
    function column(name, money) {
      return s.daily.map(function (d) { return money ? f.major(d[name]) : d[name]; });
    }
    var activity = [xs, column("clicks"), column("conversions"), column("attributed"),
      column("rewarded")];
    var money = [xs, column("revenue", true), column("reward_cost", true)];
    var key = [state.program.id, state.from, state.to].join("|");
    if (state.chartKey === key && state.charts.length) {
      state.charts[0].setData(activity);
      state.charts[1].setData(money);
      return;
    }
    state.charts.forEach(function (chart) { chart.destroy(); });
    var a = $("chart-activity");
    var m = $("chart-money");
    state.charts = [
      new uPlot(chartOptions(a, f, [["Clicks", "#2757d6"], ["Conversions", "#8e44ad"],
        ["Attributed", "#1b7f4b"], ["Rewarded", "#d98c00"]], f.count, f.compact), activity, a),
      new uPlot(chartOptions(m, f, [["Revenue", "#1b7f4b"], ["Reward cost", "#b3261e"]],
        f.majorMoney, f.compactMoney), money, m),
    ];
    state.chartKey = key;
  }

  function resizeCharts() {
    state.charts.forEach(function (chart) {
      chart.setSize({ width: Math.max(280, chart.root.parentNode.clientWidth), height: 220 });
    });
  }

  // ---- review queue -----------------------------------------------------------------------
  function describe(r, f) {
    var who = r.referrer.name || r.referrer.email;
    return f.reward(r) + " " + r.beneficiary + " reward, referrer " + who + ", order "
      + r.conversion_id;
  }

  function renderQueue(queue, f) {
    ["in_review", "pending"].forEach(function (status) {
      var section = queue[status];
      $("count-" + status).textContent = "(" + f.count(section.total) + (section.more ? "+" : "")
        + (section.total > section.items.length ? ", oldest " + section.items.length
          + " shown" : "") + ")";
      fillRows("queue-" + status, section.items, status === "in_review"
        ? "Nothing waits for review." : "No reward is waiting out its hold period.",
      function (r) {
        var signals = el("ul", null, "signals");
        r.fraud_signals.forEach(function (sig) {
          var text = sig.signal + " = " + sig.value
            + (sig.threshold !== null && sig.threshold !== undefined
              ? " (threshold " + sig.threshold + ")" : "") + " → " + sig.action;
          signals.appendChild(el("li", text, sig.action));
        });
        var last = status === "in_review" ? el("td") : cell(f.moment(r.available_at));
        if (status === "in_review") {
          if (r.fraud_signals.length) last.appendChild(signals);
          else last.textContent = "–";
        }
        var actions = el("td", null, "actions");
        var approve = el("button", "Approve", "primary");
        approve.type = "button";
        approve.setAttribute("aria-label", "Approve " + describe(r, f));
        approve.addEventListener("click", function () { approveReward(r, approve); });
        var reject = el("button", "Reject", "danger");
        reject.type = "button";
        reject.setAttribute("aria-label", "Reject " + describe(r, f));
        reject.addEventListener("click", function () { openReject(r); });
        actions.append(approve, reject);
        var row = [cell(f.moment(r.created_at)),
          cell(f.reward(r), { small: r.purpose === "milestone" ? "milestone bonus" : null }),
          cell(r.beneficiary === "friend" ? "Friend" : "Referrer",
            { small: r.beneficiary === "friend" ? r.recipient_email : null }),
          cell(r.referrer.name || r.referrer.email, { small: r.referrer.code }),
          cell(f.money(r.order_amount), { small: [r.channel, r.conversion_id].filter(Boolean)
            .join(" · ") }),
          last, actions];
        return row;
      });
      Array.prototype.forEach.call($("queue-" + status).tBodies[0].rows, function (tr, i) {
        if (section.items[i]) tr.dataset.rewardId = section.items[i].id;
      });
    });
  }

  function approveReward(reward, button) {
    button.disabled = true;
    api("/v1/rewards/" + enc(reward.id) + "/approve", { method: "POST" }).then(function () {
      announce("Approved: " + describe(reward, state.fmt) + ".");
      refresh();
    }, function (error) {
      button.disabled = false;
      showError("Could not approve: " + error.message);
    });
  }

  function openReject(reward) {
    state.rejecting = reward;
    $("reject-what").textContent = describe(reward, state.fmt);
    $("reject-reason").value = "";
    $("reject-confirm").disabled = false;
    $("reject-dialog").showModal();
    $("reject-reason").focus();
  }

  function submitReject(event) {
    event.preventDefault();
    var reward = state.rejecting;
    var reason = $("reject-reason").value.trim();
    if (!reward || !reason) { $("reject-reason").reportValidity(); return; }
    $("reject-confirm").disabled = true;
    api("/v1/rewards/" + enc(reward.id) + "/reject", {
      method: "POST", body: JSON.stringify({ reason: reason }),
    }).then(function () {
      $("reject-dialog").close();
      state.rejecting = null;
      announce("Rejected: " + describe(reward, state.fmt) + ".");
      refresh();
    }, function (error) {
      $("reject-confirm").disabled = false;
      $("reject-what").textContent = "Could not reject: " + error.message;
    });
  }

  // ---- refresh loop -----------------------------------------------------------------------
  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, delay);
  }

  function refresh() {
    if (!state.program) return Promise.resolve();
    var generation = ++state.generation;
    var program = state.program;
    var range = "from=" + enc(state.from) + "&to=" + enc(state.to);
    return Promise.all([
      api("/v1/programs/" + enc(program.id) + "/stats?" + range),
      api("/dashboard/api/programs/" + enc(program.id) + "/review-queue"),
    ]).then(function (results) {
      if (generation !== state.generation) return;
      var f = state.fmt;
      var stats = results[0];
      if (changed("stats", stats)) {
        renderKpis(stats, f);
        renderFunnel(stats, f);
        renderTables(stats, f);
        renderCharts(stats, f);
      }
      if (changed("queue", results[1])) renderQueue(results[1], f);
      showError("");
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
      document.body.dataset.loaded = String(generation);
    }, function (error) {
      if (generation !== state.generation) return;
      showError("Could not refresh: " + error.message);
    }).then(function () {
      if (generation === state.generation) {
        schedule(document.hidden ? HIDDEN_REFRESH_MS : REFRESH_MS);
      }
    });
  }

  // ---- filters ----------------------------------------------------------------------------
  function lastDays(days) {
    var now = Date.now();
    return [isoDay(new Date(now - (days - 1) * DAY_MS)), isoDay(new Date(now))];
  }

  function applyFilters() {
    var params = new URLSearchParams({ program: state.program.id, from: state.from,
      to: state.to });
    history.replaceState(null, "", "/dashboard?" + params.toString());
    $("program").value = state.program.id;
    $("from").value = state.from;
    $("to").value = state.to;
    $("csv").href = "/v1/programs/" + enc(state.program.id) + "/rewards.csv?"
      + "from=" + enc(state.from) + "&to=" + enc(state.to);
    state.fmt = formatters(state.program);
    state.rendered = {};
    refresh();
  }

  function setRange(from, to) {
    if (!from || !to) return;
    if (to < from) {
      showError("The range ends before it starts: pick a 'to' day on or after 'from'.");
      return;
    }
    state.from = from;
    state.to = to;
    applyFilters();
  }

  function start(programs) {
    // Active programmes first, the newest first among them.
    programs.sort(function (a, b) {
      return (b.active - a.active) || (a.created_at < b.created_at ? 1 : -1);
    });
    state.programs = programs;
    var select = $("program");
    programs.forEach(function (p) {
      var option = el("option", p.name + (p.active ? "" : " (inactive)") + " · " + p.currency);
      option.value = p.id;
      select.appendChild(option);
    });
    if (!programs.length) {
      $("updated").textContent = "No programme yet: create one with POST /v1/programs.";
      return;
    }
    var query = new URLSearchParams(window.location.search);
    state.program = programs.filter(function (p) { return p.id === query.get("program"); })[0]
      || programs[0];
    var range = lastDays(30);
    var from = query.get("from");
    var to = query.get("to");
    var valid = /^\d{4}-\d{2}-\d{2}$/;
    state.from = from && valid.test(from) ? from : range[0];
    state.to = to && valid.test(to) ? to : range[1];
    applyFilters();
  }

  function wire() {
    $("program").addEventListener("change", function (event) {
      state.program = state.programs.filter(function (p) { return p.id === event.target.value; })[0];
      state.chartKey = null;
      applyFilters();
    });
    $("from").addEventListener("change", function () { setRange($("from").value, state.to); });
    $("to").addEventListener("change", function () { setRange(state.from, $("to").value); });
    $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
    Array.prototype.forEach.call(document.querySelectorAll(".presets button"), function (b) {
      b.addEventListener("click", function () {
        var range = lastDays(Number(b.dataset.days));
        setRange(range[0], range[1]);
      });
    });
    $("reject-form").addEventListener("submit", submitReject);
    $("reject-cancel").addEventListener("click", function () {
      state.rejecting = null;
      $("reject-dialog").close();
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(resizeCharts, 150);
    });
  }

  wire();
  api("/v1/programs").then(start, function (error) {
    showError("Could not load the programmes: " + error.message);
  });
})();
