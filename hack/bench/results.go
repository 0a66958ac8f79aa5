package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

type results struct {
	Machine   string
	Go        []goBench
	HTTPS     []httpsResult
	API       []apiResult
	RSS       int64
	Ready     []time.Duration
	BodyBytes int
	IdleRSS   int64
	APIRSS    int64 // peak while serving the API-server runs
	// BinaryBytes is the size of the secctx binary measured (-s -w);
	// ServersBytes the reference servers', ScaffoldBytes the scaffolded
	// no-op's, built the same way.
	BinaryBytes, ServersBytes, ScaffoldBytes int64
}

// scaffoldName is the fourth server of the HTTPS comparison.
const scaffoldName = "no-op as kubebuilder scaffolds it"

const (
	startMarker = "<!-- bench:start (written by make bench; edits here are overwritten) -->"
	endMarker   = "<!-- bench:end -->"
)

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1e3) }
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Nanoseconds())/1e6) }

func joinRounds(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.0f", x))
	}
	return strings.Join(s, ", ")
}

func pass(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *results) markdown(o options) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("%s", startMarker)
	p("")
	p("Measured by `make bench` on %s, %s.", time.Now().UTC().Format("2006-01-02"), r.Machine)
	p("")

	p("### 1. The handler (Go benchmarks)")
	p("")
	p("`BenchmarkServeHTTP`, median of 6 runs of 1 s: AdmissionReview bytes in, response bytes out, the 4.2 KB Flyte task pod. `secrets=3,uncached` gives every request a SecurityContext the injector has not seen lately (the first pod of a task); the others repeat one, as the pods of a task, its retries and a map task's instances do.")
	p("")
	p("| benchmark | ns/op | B/op | allocs/op | runs (µs) |")
	p("|---|---:|---:|---:|---|")
	var three, uncached goBench
	for _, g := range r.Go {
		var runs []string
		for _, x := range g.Runs {
			runs = append(runs, fmt.Sprintf("%.1f", x/1e3))
		}
		name := strings.TrimPrefix(g.Name, "Benchmark")
		p("| %s | %.0f | %d | %d | %s |", name, g.NsOp, g.BytesOp, g.Allc, strings.Join(runs, ", "))
		switch g.Name {
		case "BenchmarkServeHTTP/secrets=3":
			three = g
		case "BenchmarkServeHTTP/secrets=3,uncached":
			uncached = g
		}
	}
	p("")

	p("### 2. HTTPS load")
	p("")
	p("Each server alone on core 0 (`taskset -c 0`), vegeta's library on core 1, loopback, keep-alive, HTTP/1.1, same certificate; the 3-secret task pod's review (%d bytes) in every request. Saturation: 64 workers for %d s after a 3 s warm-up; server CPU from `/proc/<pid>/stat` over that run. Latency: a constant 500 req/s for %d s. Median of %d rounds (throughput of each round in brackets).", r.BodyBytes, o.seconds, o.seconds, o.rounds)
	p("")
	p("| server | saturation (req/s) | CPU per request | p50 @ 500/s | p99 @ 500/s | p99.9 @ 500/s | peak RSS |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, h := range r.HTTPS {
		p("| %s | %.0f [%s] | %s | %s | %s | %s | %.1f MiB |", h.Name, h.Saturation, joinRounds(h.RoundsSat), us(h.CPUPerReq), ms(h.P50), ms(h.P99), ms(h.P999), float64(h.RSS)/(1<<20))
	}
	var sec, noop, bare, scaffold httpsResult
	if len(r.HTTPS) == 4 {
		sec, noop, bare, scaffold = r.HTTPS[0], r.HTTPS[1], r.HTTPS[2], r.HTTPS[3]
	}
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	p("")
	p("| secctx ÷ | throughput | CPU per request | p50 | p99 | p99.9 |")
	p("|---|---:|---:|---:|---:|---:|")
	for _, ref := range []httpsResult{noop, bare, scaffold} {
		p("| %s | %.2f× | %.2f× | %.2f× | %.2f× | %.2f× |", ref.Name, ratio(sec.Saturation, ref.Saturation),
			ratio(float64(sec.CPUPerReq), float64(ref.CPUPerReq)), ratio(float64(sec.P50), float64(ref.P50)),
			ratio(float64(sec.P99), float64(ref.P99)), ratio(float64(sec.P999), float64(ref.P999)))
	}
	p("")

	p("### 3. Pod creation through kube-apiserver")
	p("")
	p("The harness's control-plane mode (etcd and kube-apiserver v1.37.2 on this machine): %d labelled 3-secret task pods created by 8 concurrent clients (no client-side rate limit), with no webhook, with the no-op controller-runtime webhook registered, with the patch floor registered (a bare TLS handler answering every review with secctx's own answer, recorded once: the API server's work for secctx's patch, without secctx's), and with secctx registered (URL webhooks, `failurePolicy: Fail`, served on the same machine), in turn; the first round of each is a warm-up, the median of the other %d is shown (each round's pods/s in brackets). Every pod is checked: injected with secctx and the floor, not without.", o.pods, o.rounds)
	p("")
	p("| | pods/s | p50 create | p99 create |")
	p("|---|---:|---:|---:|")
	for _, a := range r.API {
		p("| %s | %.0f [%s] | %s | %s |", a.Name, a.Throughput, joinRounds(a.Rounds), ms(a.P50), ms(a.P99))
	}
	var none, noopAPI, floor, withSecctx apiResult
	if len(r.API) == 4 {
		none, noopAPI, floor, withSecctx = r.API[0], r.API[1], r.API[2], r.API[3]
	}
	floorRatio := ratio(withSecctx.Throughput, floor.Throughput)
	floorP99 := ratio(float64(withSecctx.P99), float64(floor.P99))
	p("")
	p("Of the throughput without a webhook: the no-op webhook (called, returns no patch) %.0f%%, the patch floor %.0f%%, secctx %.0f%%. secctx ÷ patch floor: %.2f× the throughput, %.2f× the p99.",
		ratio(noopAPI.Throughput, none.Throughput)*100, ratio(floor.Throughput, none.Throughput)*100, ratio(withSecctx.Throughput, none.Throughput)*100, floorRatio, floorP99)
	p("")

	p("### 4. Memory and start")
	p("")
	ready := slices.Clone(r.Ready)
	slices.Sort(ready)
	var rs []string
	for _, d := range r.Ready {
		rs = append(rs, ms(d))
	}
	readyMed := time.Duration(0)
	if len(ready) > 0 {
		readyMed = ready[len(ready)/2]
	}
	p("- Peak RSS of `secctx serve` (VmHWM) while serving the API-server runs (section 3): %.1f MiB. Under HTTPS saturation (section 2, 64 connections at full speed): %.1f MiB. 1 s after ready, before any request: %.1f MiB. The binary (`-ldflags \"-s -w\"`, as the image has it): %.1f MB.", float64(r.APIRSS)/(1<<20), float64(r.RSS)/(1<<20), float64(r.IdleRSS)/(1<<20), float64(r.BinaryBytes)/1e6)
	p("- Peak RSS under HTTPS saturation, binaries built alike (`-trimpath -ldflags \"-s -w\"`): secctx %.1f MiB (binary %.1f MB); the no-op %.1f MiB and the bare server %.1f MiB (one binary, %.1f MB); %s %.1f MiB (binary %.1f MB).",
		float64(sec.RSS)/(1<<20), float64(r.BinaryBytes)/1e6, float64(noop.RSS)/(1<<20), float64(bare.RSS)/(1<<20), float64(r.ServersBytes)/1e6, scaffoldName, float64(scaffold.RSS)/(1<<20), float64(r.ScaffoldBytes)/1e6)
	p("- From `exec` to `/readyz` 200 (certificates loaded, HTTPS listening, service-account cache synced against the control-plane cluster): median %s (runs: %s).", ms(readyMed), strings.Join(rs, ", "))
	p("")

	p("### Against the targets")
	p("")
	p("| target | measured | |")
	p("|---|---|---|")
	p("| handler < 50 µs, < 300 allocs (3 secrets) | %.1f µs, %d allocs (first pod of a SecurityContext: %.1f µs, %d allocs) | %s |", three.NsOp/1e3, three.Allc,
		uncached.NsOp/1e3, uncached.Allc, pass(max(three.NsOp, uncached.NsOp) < 50000 && max(three.Allc, uncached.Allc) < 300))
	for _, g := range r.Go {
		if shape, ok := podShape(g.Name); ok {
			p("| handler < 50 µs, < 300 allocs (%s) | %.1f µs, %d allocs | %s |", shape, g.NsOp/1e3, g.Allc, pass(g.NsOp < 50000 && g.Allc < 300))
		}
	}
	p("| HTTPS ≥ 1.5× the no-op controller-runtime webhook | %.2f× | %s |", ratio(sec.Saturation, noop.Saturation), pass(ratio(sec.Saturation, noop.Saturation) >= 1.5))
	p("| HTTPS ≥ 0.5× bare TLS | %.2f× | %s |", ratio(sec.Saturation, bare.Saturation), pass(ratio(sec.Saturation, bare.Saturation) >= 0.5))
	p("| p99 at 500 req/s ≤ the no-op's | %s vs %s | %s |", ms(sec.P99), ms(noop.P99), pass(sec.P99 <= noop.P99))
	p("| through the API server ≥ 0.9× the patch floor's throughput | %.2f× (%.0f vs %.0f pods/s) | %s |", floorRatio, withSecctx.Throughput, floor.Throughput, pass(floorRatio >= 0.9))
	p("| p99 create within 20%% of the patch floor's | %s vs %s (%.2f×) | %s |", ms(withSecctx.P99), ms(floor.P99), floorP99, pass(floorP99 <= 1.2))
	p("| peak RSS under HTTPS saturation ≤ the no-op's | %.1f MiB vs %.1f MiB | %s |", float64(sec.RSS)/(1<<20), float64(noop.RSS)/(1<<20), pass(sec.RSS <= noop.RSS))
	p("| ready < 1 s after start | %s | %s |", ms(readyMed), pass(readyMed < time.Second))
	p("")
	p("%s", endMarker)
	return b.String()
}

// podShape is the pod of a handler benchmark that has a row of its own in
// the targets: tokens, an IAM role, fetched secrets, policies, the audit
// line; not the plain secret counts or the uncached case.
func podShape(bench string) (string, bool) {
	shape, ok := strings.CutPrefix(bench, "BenchmarkServeHTTP/")
	if !ok || shape == "secrets=3,uncached" {
		return "", false
	}
	return shape, strings.Contains(shape, ",") || strings.HasPrefix(shape, "tokens")
}

// writeBetweenMarkers replaces what is between the markers in path, or
// appends the section when the page has none.
func writeBetweenMarkers(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, startMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n## Results\n\n" + section + "\n"
	} else {
		s = s[:i] + section + s[j+len(endMarker)+1:]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
