package agent

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// SidecarConfig is the sidecar's: the tokens it keeps and the secrets it
// keeps fresh, in one process, so that a pod has one secctx sidecar
// whatever it asks for.
type SidecarConfig struct {
	// Tokens are the OAuth2 tokens; none when Tokens.Tokens is empty.
	Tokens TokensConfig
	// Refresh is the set of FILE secrets to keep fresh; nil for none.
	Refresh *RefreshConfig
	// Fetch, when set, are the secrets to fetch first, as the fetch init
	// container would (inject.agent.fetchIn: sidecar): the status is
	// ready once they are written, or failed (status.Failed) when they
	// cannot be, and only then are they refreshed.
	Fetch *FetchConfig
	// Status is the status file: the token directory's .status, or
	// without tokens ..status in the secrets' set directory.
	Status string
	// InstallDir, when set, is where to install the exec wrapper first; the
	// status is not ready until it is there.
	InstallDir string
	// Wait is how long --wait waits for the status to be ready.
	Wait time.Duration
}

// DefaultRefreshConfig returns the refresh's defaults, the interval aside.
func DefaultRefreshConfig() RefreshConfig {
	return RefreshConfig{Fetch: DefaultFetchConfig(), Jitter: 0.1,
		MinBackoff: time.Second, MaxBackoff: 5 * time.Minute, RequestTimeout: 30 * time.Second}
}

func runSidecar(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, check, err := parseSidecarArgs(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, program()+" sidecar:", err)
		return 2
	}
	if check {
		msg, ok := Check(cfg.Status)
		for deadline := time.Now().Add(cfg.Wait); !ok && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
				msg, ok = Check(cfg.Status)
			}
		}
		if !ok {
			fmt.Fprintln(stdout, msg)
			return 1
		}
		return 0
	}
	cfg.Tokens.CABundle = os.Getenv("SECCTX_CA_BUNDLE") // set by the webhook from inject.tokens.caBundle
	if cfg.Refresh != nil {
		storeEnv(&cfg.Refresh.Fetch)
	}
	if cfg.Fetch != nil {
		storeEnv(cfg.Fetch)
	}
	log := newLogger(stderr)
	err = RunSidecar(ctx, cfg, log)
	// Stopped before it was ready (its postStart hook gave up, and the
	// kubelet stops it to start it again): what was wrong becomes the
	// container's termination message, which kubectl describe shows as
	// its last state, since the hook's own output reaches no event.
	if msg, ok := Check(cfg.Status); !ok {
		writeTerminationMessage(program() + " sidecar: " + msg)
	}
	if err != nil {
		log.Error(err, "sidecar stopped")
		return 1
	}
	return 0
}

// parseSidecarArgs reads the sidecar's flags, as the webhook writes them:
// the tokens' (--dir, --tokens) and the refreshed secrets' (--refresh, and
// the fetch's --secrets, --set-dir and store flags). With --check only
// --status, or --dir or --set-dir, matters.
func parseSidecarArgs(args []string, stderr io.Writer) (cfg SidecarConfig, check bool, err error) {
	cfg.Tokens = DefaultTokensConfig()
	rc := DefaultRefreshConfig()
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var spec string
	fs.StringVar(&cfg.Tokens.Dir, "dir", "", "directory the tokens are written to")
	fs.StringVar(&spec, "tokens", "", "the tokens, as JSON (written by the webhook)")
	fs.StringVar(&cfg.Status, "status", "", "the status file (default: .status in --dir, else ..status in --set-dir)")
	fs.BoolVar(&check, "check", false, "exit 0 when every token is written, else print why not and exit 1")
	var wait bool
	fs.BoolVar(&wait, "wait", false, "as --check, but wait up to --wait-timeout for every token to be written (the postStart hook)")
	fs.DurationVar(&cfg.Wait, "wait-timeout", 2*time.Minute, "how long --wait waits")
	fs.DurationVar(&cfg.Tokens.MinRefresh, "min-refresh", cfg.Tokens.MinRefresh, "the least wait between two renewals of a token")
	fs.Func("http-host", "a host that may be reached over plain http (repeatable)", func(h string) error {
		cfg.Tokens.HTTPHosts = append(cfg.Tokens.HTTPHosts, h)
		return nil
	})
	fs.StringVar(&cfg.InstallDir, "install-dir", "", "install the exec wrapper (secctx-agent) into this directory first")
	fs.DurationVar(&rc.Interval, "refresh", 0, "read the secrets of --secrets again this often (0: not at all)")
	var fetchSpec string
	fetchTimeout := DefaultFetchConfig().Timeout
	fs.StringVar(&fetchSpec, "fetch-secrets", "", "fetch these secrets first, as JSON (as fetch's --secrets), with the store flags given")
	fs.DurationVar(&fetchTimeout, "timeout", fetchTimeout, "with --fetch-secrets: how long to keep trying to fetch, in all")
	fs.Float64Var(&rc.Jitter, "refresh-jitter", rc.Jitter, "spread each refresh by up to this part of --refresh either way")
	finish := fetchFlags(fs, &rc.Fetch)
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !wait {
		cfg.Wait = 0
	}
	check = check || wait
	if cfg.Status == "" {
		switch {
		case cfg.Tokens.Dir != "":
			cfg.Status = filepath.Join(cfg.Tokens.Dir, StatusFile)
		case rc.Fetch.SetDir != "":
			cfg.Status = filepath.Join(rc.Fetch.SetDir, StatusName)
		default:
			return cfg, false, errors.New("--dir, --set-dir or --status is required")
		}
	}
	if check {
		return cfg, true, nil
	}
	if spec != "" {
		if err := json.Unmarshal([]byte(spec), &cfg.Tokens.Tokens); err != nil {
			return cfg, false, fmt.Errorf("--tokens: want a JSON list of tokens (%v)", err)
		}
		if cfg.Tokens.Dir == "" {
			return cfg, false, errors.New("--tokens: --dir is required")
		}
	}
	if rc.Interval != 0 || fetchSpec != "" {
		if err := finish(rc.Interval != 0); err != nil {
			return cfg, false, err
		}
	}
	if fetchSpec != "" {
		fc := rc.Fetch
		fc.Secrets, fc.Timeout = nil, fetchTimeout
		if err := json.Unmarshal([]byte(fetchSpec), &fc.Secrets); err != nil {
			return cfg, false, fmt.Errorf("--fetch-secrets: %w", err)
		}
		if len(fc.Secrets) == 0 || fc.Timeout <= 0 {
			return cfg, false, fmt.Errorf("--fetch-secrets with %d secrets, --timeout %s: want some secrets and a positive timeout", len(fc.Secrets), fc.Timeout)
		}
		cfg.Fetch = &fc
	}
	if rc.Interval != 0 {
		cfg.Refresh = &rc
		if len(rc.Fetch.Secrets) == 0 {
			return cfg, false, errors.New("--refresh: --secrets is empty")
		}
		if rc.Interval < time.Second || rc.Jitter < 0 || rc.Jitter >= 1 {
			return cfg, false, fmt.Errorf("--refresh %s, --refresh-jitter %g: the interval must be at least 1s and the jitter in [0, 1)", rc.Interval, rc.Jitter)
		}
	}
	if len(cfg.Tokens.Tokens) == 0 && cfg.Refresh == nil && cfg.Fetch == nil {
		return cfg, false, errors.New("nothing to keep: give --tokens, --fetch-secrets, or --secrets with --refresh")
	}
	if len(cfg.Tokens.Tokens) > 0 {
		if err := cfg.Tokens.validate(); err != nil {
			return cfg, false, err
		}
	}
	return cfg, false, nil
}

// RunSidecar keeps the tokens and refreshes the secrets until ctx ends
// (the pod ends: the kubelet sends SIGTERM), then returns nil, so that the
// sidecar exits 0 and a Job completes. Its status file says, for the
// startup probe and for whoever reads it, which token is not written yet
// and what is failing.
func RunSidecar(ctx context.Context, cfg SidecarConfig, log logr.Logger) error {
	book := newStatusBook(cfg.Status, log)
	var run []func(context.Context)
	if len(cfg.Tokens.Tokens) > 0 {
		if err := cfg.Tokens.validate(); err != nil {
			return err
		}
		if err := os.MkdirAll(cfg.Tokens.Dir, 0o755); err != nil {
			return fmt.Errorf("token directory: %w", err)
		}
		tokenClient, discoveryClient, err := httpClients(cfg.Tokens)
		if err != nil {
			return err
		}
		run = append(run, newRunner(cfg.Tokens, tokenClient, discoveryClient, book, log).run)
	}
	var refresh func(context.Context)
	if cfg.Refresh != nil {
		r, err := newRefresher(*cfg.Refresh, book, log.WithValues("part", "refresh"))
		if err != nil {
			return err
		}
		refresh = r.run
	}
	fetched := make(chan struct{}) // closed once the fetch wrote every secret
	if cfg.Fetch == nil {
		close(fetched)
	} else {
		book.add("secrets", "not fetched yet", false)
	}
	if cfg.InstallDir != "" {
		// Before the tokens, so that the task never starts without its
		// wrapper: the status is ready only once both are there.
		book.add("exec wrapper", "not installed yet", false)
		book.write()
		if err := InstallWrapper(cfg.InstallDir); err != nil {
			book.set("exec wrapper", "install into "+cfg.InstallDir+": "+err.Error(), false)
			return fmt.Errorf("install the exec wrapper: %w", err)
		}
		book.set("exec wrapper", "", true)
		log.Info("exec wrapper installed", "dir", cfg.InstallDir)
	}
	book.write()
	var wg sync.WaitGroup
	if cfg.Fetch != nil {
		// The tokens meanwhile; the refresh once the set it refreshes is
		// written.
		wg.Go(func() {
			// A fetch that failed is tried again, less and less often: the
			// task's containers fail with the reason meanwhile, and one
			// that the kubelet starts again (restartPolicy OnFailure or
			// Always) runs once the secrets are there.
			for wait := cfg.Fetch.MaxBackoff; ; wait = min(2*wait, 10*time.Minute) {
				err := Fetch(ctx, *cfg.Fetch, log.WithValues("part", "fetch"))
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				log.Error(err, "fetch failed: the task's containers fail with it; trying again", "retryIn", wait.String())
				book.fail(err.Error())
				select {
				case <-ctx.Done():
					return
				case <-time.After(jitter(wait)):
				}
			}
			book.recovered("secrets")
			close(fetched)
		})
	}
	for _, f := range run {
		wg.Go(func() { f(ctx) })
	}
	if refresh != nil {
		wg.Go(func() {
			select {
			case <-fetched:
				refresh(ctx)
			case <-ctx.Done():
			}
		})
	}
	wg.Wait()
	// A sidecar that only fetched, or whose fetch failed, has nothing
	// left to run, but must not exit: the kubelet would start it again.
	<-ctx.Done()
	log.Info("sidecar stopping: the pod is ending")
	return nil
}
