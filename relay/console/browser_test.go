package console_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive Chromium (chromedp) against the real chatrelay
// binary, as an operator would: log in, watch a down sink come back up
// without reloading, open a conversation, filter the dead letters, replay
// them by filter after the confirmation, log out. One browser serves every
// step. Without Chromium they are skipped, saying how to run them; .ci/run
// installs it.

var updateScreenshots = flag.Bool("update-screenshots", false, "write the README's console screenshot to docs/")

// findChromium returns the browser to drive, or "".
func findChromium() string {
	if p := os.Getenv("CHATRELAY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func listenAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// toggleHook is a webhook destination that answers refuse while set, else
// 204, and counts what it accepted.
type toggleHook struct {
	srv      *httptest.Server
	refuse   atomic.Int32  // an HTTP status, or 0 to accept
	accepted chan struct{} // one per accepted delivery
}

func newToggleHook(t *testing.T, refuse int) *toggleHook {
	h := &toggleHook{accepted: make(chan struct{}, 1000)}
	h.refuse.Store(int32(refuse))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := h.refuse.Load(); code != 0 {
			http.Error(w, "refused by the test", int(code))
			return
		}
		w.WriteHeader(http.StatusNoContent)
		h.accepted <- struct{}{}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// relayProcess is the chatrelay binary, serving.
type relayProcess struct {
	listen, admin, secret string
}

func startRelay(t *testing.T, crm, archive *toggleHook) *relayProcess {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "chatrelay")
	build := exec.Command("go", "build", "-o", bin, "github.com/chatrelay/chatrelay/cmd/chatrelay")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := &relayProcess{listen: listenAddr(t), admin: listenAddr(t), secret: "browser-test-signing-secret"}
	cfg := filepath.Join(dir, "chatrelay.yaml")
	err := os.WriteFile(cfg, fmt.Appendf(nil, `
listen: %s
admin: {listen: %s, token: %s}
signing_secrets: [%s]
log: {level: info, format: json}
store: {path: %s}
retry: {initial: 100ms, max: 1s, max_age: 10m}
sinks:
  - name: crm
    type: webhook
    url: %s/crm
  - name: archive
    type: webhook
    url: %s/archive
`, p.listen, p.admin, token, p.secret, filepath.Join(dir, "data"), crm.srv.URL, archive.srv.URL), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("chatrelay did not stop on SIGTERM")
		}
		if t.Failed() {
			t.Logf("chatrelay's log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatrelay not ready: %v", err)
		}
		select {
		case err := <-exited:
			t.Fatalf("chatrelay exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// send signs body as Chat Data does and posts it.
func (p *relayProcess) send(t *testing.T, topic, body string) {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(p.secret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.listen+"/webhook", strings.NewReader(body))
	req.Header.Set("x-chat-data-hmac-sha256", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	req.Header.Set("x-chat-data-topic", topic)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /webhook: %d", resp.StatusCode)
	}
}

func chatTurn(conv, question, answer string, score float64, history ...string) string {
	var msgs []string
	for _, h := range history {
		msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":%q},{"role":"assistant","content":"ok"}`, h))
	}
	msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":%q}`, question))
	return fmt.Sprintf(`{"conversation_id":%q,"chatbot_id":"654aee418bc9a33b0e50d0ad","source":"widget","cost_credits":2,`+
		`"messages":[%s],"answer":{"role":"assistant","content":%q,"score":%v}}`, conv, strings.Join(msgs, ","), answer, score)
}

// browserStep runs one step of the scenario in the shared tab, with a
// deadline, and saves a screenshot of the tab if it fails.
// Later steps build on earlier ones: after a failure the rest are skipped.
func browserStep(t *testing.T, tab context.Context, name string, fn func(t *testing.T, ctx context.Context)) {
	if t.Failed() {
		return
	}
	t.Run(name, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(tab, 30*time.Second)
		defer cancel()
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			sctx, cancel := context.WithTimeout(tab, 10*time.Second)
			defer cancel()
			png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
			if err != nil {
				t.Logf("no screenshot: %v", err)
				return
			}
			path := filepath.Join(t.ArtifactDir(), "failure.png")
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Logf("screenshot not saved: %v", err)
				return
			}
			t.Logf("screenshot of the page: %s (go test -artifacts keeps it)", path)
		})
		fn(t, ctx)
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	must(t, err)
	return strings.Join(strings.Fields(s), " ")
}

func TestBrowser(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("no Chromium here: the browser tests need it. Install it (apt-get install -y chromium, as .ci/run does) " +
			"or set CHATRELAY_CHROMIUM to a Chrome or Chromium binary, then run go test ./relay/console/ -run TestBrowser")
	}
	if testing.Short() {
		t.Skip("browser tests skipped in -short mode")
	}
	crm := newToggleHook(t, http.StatusGone)           // down until it answers again
	archive := newToggleHook(t, http.StatusBadRequest) // refuses: dead letters
	relay := startRelay(t, crm, archive)
	base := "http://" + relay.admin

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(alloc)
	defer cancelTab()
	must(t, chromedp.Do(tab)) // start the browser, without a deadline

	// Traffic: a conversation of two turns (one answer of low confidence),
	// a lead and an escalation. crm answers 410 (gone): it goes down;
	// archive answers 400: every delivery to it is parked.
	const conv = "conv-browser-1"
	relay.send(t, "chat", chatTurn(conv, "Do you ship to Canada?", "Yes, in 5-7 business days.", 0.86))
	relay.send(t, "chat", chatTurn(conv, "And to Mexico?", "I am not sure about Mexico.", 0.31, "Do you ship to Canada?"))
	relay.send(t, "lead-submission", `{"conversation_id":"conv-browser-2","chatbot_id":"654aee418bc9a33b0e50d0ad","lead":{"name":"Ada","email":"ada@example.com"}}`)
	relay.send(t, "live-chat-escalation", `{"conversation_id":"conv-browser-3","chatbot_id":"654aee418bc9a33b0e50d0ad","messages":[{"role":"user","content":"A human, please"}],"answer":{"content":"Connecting you.","score":0.4}}`)

	browserStep(t, tab, "log in", func(t *testing.T, ctx context.Context) {
		must(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
		loc, err := chromedp.Run(ctx, chromedp.Location())
		must(t, err)
		if !strings.Contains(loc, "/login") {
			t.Fatalf("without a session the console showed %s, want the login form", loc)
		}
		must(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("token"), "not-the-token"),
			chromedp.Submit(chromedp.ID("token")),
			chromedp.WaitVisible(chromedp.CSS(".alert")),
		))
		if got := text(t, ctx, ".alert"); !strings.Contains(got, "not the admin token") {
			t.Fatalf("wrong token said %q", got)
		}
		must(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.ID("token"), token), // a fresh form: the field is empty
			chromedp.Submit(chromedp.ID("token")),
			chromedp.WaitVisible(chromedp.CSS(`table.sinks`)),
		))
		if got := text(t, ctx, "h1"); got != "Overview" {
			t.Fatalf("after login: %q", got)
		}
	})

	browserStep(t, tab, "a down sink turns up live", func(t *testing.T, ctx context.Context) {
		// The overview is open; crm goes down on its 410.
		must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="crm"].down`))))
		// Mark the page: a reload would lose the mark.
		_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`))
		must(t, err)
		must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#live-status[data-state="live"]`))))
		if *updateScreenshots {
			// Let the usage figures count the traffic, then picture the
			// page as the README shows it: a sink down, dead letters.
			must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`table.usage td.num`))))
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
			must(t, err)
			must(t, os.WriteFile(filepath.Join("..", "..", "docs", "console-overview.png"), png, 0o644))
		}
		crm.refuse.Store(0) // the destination is back: the next probe succeeds
		must(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="crm"].up`))))
		still, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true`))
		must(t, err)
		if !still {
			t.Fatal("the page was reloaded; the overview should update in place")
		}
		if got := text(t, ctx, `tr[data-sink="crm"] td[data-label="State"]`); got != "up" {
			t.Fatalf("crm's state reads %q", got)
		}
	})

	browserStep(t, tab, "open a conversation", func(t *testing.T, ctx context.Context) {
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`nav a[href="/events"]`)),
			chromedp.WaitVisible(chromedp.ID("q")),
			chromedp.SendKeys(chromedp.ID("q"), conv),
			chromedp.Submit(chromedp.ID("q")),
			chromedp.WaitVisible(chromedp.CSS(`ol.transcript`)),
		))
		turns := text(t, ctx, "ol.transcript")
		first, second := strings.Index(turns, "Do you ship to Canada?"), strings.Index(turns, "And to Mexico?")
		if first < 0 || second < 0 || first > second {
			t.Fatalf("transcript out of order or incomplete: %q", turns)
		}
		if !strings.Contains(turns, "score 0.31 · low") || !strings.Contains(turns, "I am not sure about Mexico.") {
			t.Fatalf("the second answer or its low score is missing: %q", turns)
		}
		// Each turn says where each sink's delivery stands.
		if got := text(t, ctx, "ol.transcript li:first-child table.deliveries"); !strings.Contains(got, "archive dead") ||
			!strings.Contains(got, "HTTP 400") {
			t.Fatalf("first turn's deliveries: %q", got)
		}
	})

	var parked string
	browserStep(t, tab, "filter the dead letters", func(t *testing.T, ctx context.Context) {
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`nav a[href="/dlq"]`)),
			chromedp.WaitVisible(chromedp.ID("f-sink")),
			chromedp.SetValue(chromedp.ID("f-sink"), "archive"),
			chromedp.SendKeys(chromedp.ID("f-reason"), "400"),
			chromedp.SendKeys(chromedp.ID("f-since"), "1h"),
			chromedp.Submit(chromedp.ID("f-reason")),
			chromedp.WaitVisible(chromedp.CSS(`.filters a[href="/dlq"]`)), // "Clear": a filter is set
		))
		loc, err := chromedp.Run(ctx, chromedp.Location())
		must(t, err)
		if !strings.Contains(loc, "sink=archive") || !strings.Contains(loc, "reason=400") {
			t.Fatalf("filtered to %s", loc)
		}
		parked = text(t, ctx, "#match-count")
		if parked != "4 dead letters match the filter." {
			t.Fatalf("count says %q, want the 4 events parked on archive", parked)
		}
		// Every control is reachable with the keyboard.
		unreachable, err := chromedp.Run(ctx, chromedp.Evaluate[int](
			`[...document.querySelectorAll("a, button, input, select")].filter(e => e.tabIndex < 0 && e.type !== "hidden").length`))
		must(t, err)
		if unreachable != 0 {
			t.Fatalf("%d controls cannot be reached with Tab", unreachable)
		}
	})

	browserStep(t, tab, "every control reached with Tab, focus visible", func(t *testing.T, ctx context.Context) {
		// The filtered dead letters: filters, actions, the list. Tab
		// through the page and note what takes the focus, and whether it
		// shows. console.js is deferred: it disables the selection
		// buttons once it has run, so count only after the page loaded.
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.readyState === "complete"`))
		must(t, err)
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(() => {
			const els = [...document.querySelectorAll("a[href], button, input, select, summary")]
				.filter(e => !e.disabled && e.type !== "hidden" && e.getClientRects().length > 0);
			els.forEach((e, i) => e.dataset.kb = i);
			document.activeElement && document.activeElement.blur();
			return els.length;
		})()`))
		must(t, err)
		if n < 10 {
			t.Fatalf("only %d controls on the filtered dead letters", n)
		}
		reached := map[string]bool{}
		for range 2 * n {
			must(t, chromedp.Do(ctx, chromedp.KeyEvent("\t")))
			at, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
				const e = document.activeElement;
				return [e.dataset.kb || "", getComputedStyle(e).outlineStyle, e.outerHTML.slice(0, 80)];
			})()`))
			must(t, err)
			if at[0] == "" {
				continue // the page itself, between rounds
			}
			if at[1] == "none" {
				t.Errorf("no focus outline on %s", at[2])
			}
			reached[at[0]] = true
		}
		if len(reached) != n {
			t.Fatalf("Tab reached %d of the %d controls", len(reached), n)
		}
	})

	browserStep(t, tab, "readable on a phone", func(t *testing.T, ctx context.Context) {
		back, err := chromedp.Run(ctx, chromedp.Location())
		must(t, err)
		must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)))
		// Nothing is wider than the screen: no page or table to scroll
		// sideways, no cell (a sink's state, a count, an error) past its
		// right edge.
		for _, page := range []string{base + "/", base + "/events", back, base + "/conversations/" + conv} {
			must(t, chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("main h1"))))
			wide, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
				const vw = document.documentElement.clientWidth, out = [];
				if (document.documentElement.scrollWidth > vw)
					out.push("the page is " + document.documentElement.scrollWidth + "px wide on a " + vw + "px screen");
				for (const w of document.querySelectorAll(".table-wrap"))
					if (w.scrollWidth > w.clientWidth + 1)
						out.push("table." + (w.querySelector("table") || w).className + " scrolls: " + w.scrollWidth + "px in " + w.clientWidth);
				for (const c of document.querySelectorAll("main td, main th")) {
					const r = c.getBoundingClientRect();
					if (r.width > 0 && r.right > vw + 1)
						out.push((c.dataset.label || c.textContent.trim().slice(0, 20)) + " ends at " + Math.round(r.right) + "px");
				}
				return out;
			})()`))
			must(t, err)
			if len(wide) > 0 {
				t.Errorf("%s on a phone: %s", page, strings.Join(wide, "; "))
			}
		}
		must(t, chromedp.Do(ctx, chromedp.EmulateReset(), chromedp.Navigate(back), chromedp.WaitVisible(chromedp.ID("match-count"))))
	})

	browserStep(t, tab, "replay by filter after the confirmation", func(t *testing.T, ctx context.Context) {
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`button[value="replay-all"]`)),
			chromedp.WaitVisible(chromedp.ID("confirm-h")),
		))
		if got := text(t, ctx, "#confirm-h"); got != "Replay 4 dead letters?" {
			t.Fatalf("confirmation says %q", got)
		}
		archive.refuse.Store(0)
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`form[action="/dlq/apply"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".notice")),
		))
		if got := text(t, ctx, ".notice"); got != "Replayed 4 dead letters." {
			t.Fatalf("after the replay the list says %q", got)
		}
		for i := range 4 {
			select {
			case <-archive.accepted:
			case <-ctx.Done():
				t.Fatalf("archive got %d of the 4 replayed deliveries", i)
			}
		}
	})

	browserStep(t, tab, "log out", func(t *testing.T, ctx context.Context) {
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`form.logout button`)),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.Navigate(base+"/dlq"),
			chromedp.WaitVisible(chromedp.ID("token")),
		))
		loc, err := chromedp.Run(ctx, chromedp.Location())
		must(t, err)
		if !strings.Contains(loc, "/login?next=%2Fdlq") {
			t.Fatalf("after logout /dlq showed %s, want the login form", loc)
		}
	})
}
