package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// attackResult is what one load run reports to the parent process.
type attackResult struct {
	Requests   uint64        `json:"requests"`
	Success    float64       `json:"success"`
	Throughput float64       `json:"throughput"`
	P50        time.Duration `json:"p50"`
	P99        time.Duration `json:"p99"`
	P999       time.Duration `json:"p999"`
	Errors     []string      `json:"errors,omitempty"`
}

// attack is `bench attack URL CAFILE BODYFILE RATE SECONDS`: RATE 0 means as
// fast as the server answers (64 workers, keep-alive). It runs in its own
// process so that it can be pinned to the core the server does not use.
func attack(url, caFile, bodyFile, rate, seconds string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	r, err := strconv.Atoi(rate)
	if err != nil {
		return err
	}
	s, err := strconv.Atoi(seconds)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	opts := []func(*vegeta.Attacker){
		vegeta.TLSConfig(&tls.Config{RootCAs: pool}),
		vegeta.HTTP2(false),
		vegeta.KeepAlive(true),
		vegeta.Timeout(10 * time.Second),
	}
	if r == 0 {
		opts = append(opts, vegeta.Workers(64), vegeta.MaxWorkers(64))
	}
	attacker := vegeta.NewAttacker(opts...)
	targeter := vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost, URL: url, Body: body,
		Header: http.Header{"Content-Type": []string{"application/json"}},
	})
	var m vegeta.Metrics
	for res := range attacker.Attack(targeter, vegeta.ConstantPacer{Freq: r, Per: time.Second}, time.Duration(s)*time.Second, "bench") {
		m.Add(res)
	}
	m.Close()
	out := attackResult{
		Requests: m.Requests, Success: m.Success, Throughput: m.Throughput,
		P50: m.Latencies.P50, P99: m.Latencies.P99, P999: m.Latencies.Quantile(0.999),
		Errors: m.Errors,
	}
	if len(out.Errors) > 5 {
		out.Errors = out.Errors[:5]
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func (r attackResult) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %s, p99 %s, p99.9 %s, %.2f%% ok", r.Throughput, r.P50, r.P99, r.P999, r.Success*100)
}
