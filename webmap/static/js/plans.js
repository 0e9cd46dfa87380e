/* The plans page: make an automatic plan, following the background job when it runs for the
   whole district. */
"use strict";
(function () {
  const form = document.getElementById("new-plan");
  if (!form) return;
  const token = document.querySelector("meta[name=csrf-token]").content;
  const message = document.getElementById("plan-message");
  const JOB_STATUS = { queued: t("queued"), running: t("running"), done: t("done"), failed: t("failed") };
  const button = form.querySelector("button[type=submit], button:not([type])");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    // one plan per click: a second click (or Enter) while one is being made makes no second plan
    if (form.dataset.busy) return;
    form.dataset.busy = "1";
    if (button) button.disabled = true;
    const data = new FormData(form);
    const body = { name: data.get("name") };
    if (data.get("street")) body.street = data.get("street");
    for (const key of ["minimum", "maximum"]) if (data.get(key)) body[key] = Number(data.get(key));
    if (data.get("fresh")) body.fresh = true;
    message.className = "";
    message.textContent = t("Planning…");
    const fail = (text) => {
      message.className = "banner"; message.textContent = text;
      delete form.dataset.busy;
      if (button) button.disabled = false;
    };
    try {
      const response = await fetch("/api/plans", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": token }, body: JSON.stringify(body) });
      const answer = await response.json();
      if (response.status === 201) { window.location = answer.url; return; }
      if (response.status !== 202) { fail(t("Could not make the plan: {reason}", { reason: answer.detail || answer.title || response.status })); return; }
      const bar = document.getElementById("job-progress");
      bar.hidden = false;
      const poll = async () => {
        try {
          const job = await (await fetch(answer.url, { credentials: "same-origin" })).json();
          bar.value = job.progress;
          // a queued job's message says it all (why it waits), a running one's what it is doing
          message.textContent = job.status === "queued" && job.message ? job.message
            : `${JOB_STATUS[job.status] || job.status} ${job.message || ""}`;
          if (job.status === "done") window.location = `/plans/${job.result.plan_id}`;
          else if (job.status === "failed") fail(t("Failed: {reason}", { reason: job.message }));
          else setTimeout(poll, 1000);
        } catch (err) { fail(t("Could not reach the server: reload the page")); }
      };
      poll();
    } catch (err) { fail(t("Could not reach the server: try again")); }
  });
})();
