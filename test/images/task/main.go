// Command task stands in for a workflow task in the end-to-end tests and the
// demo: it reads what secctx injected the way task code does and prints it.
// Secret values are shown as their first 3 characters and "..." unless -full
// is given (the tests compare whole values; the demo must not print them).
//
//	task [-full] env NAME...          print environment variables
//	task [-full] file-from-env NAME...  print the file each variable points to
//	task [-full] flytekit GROUP[/VERSION]/KEY...
//	                                  find secrets by flytekit's lookup rule
//	task whoami                       print the service account of the pod's token
//	task pyflyte-execute ...          stand in for flytekit's entrypoint in a pod as
//	                                  flytepropeller makes it: print every secret
//	                                  flytekit could find (env vars with its prefix,
//	                                  files under its directory)
//	task call-api URL NAME [DURATION]
//	                                  call URL with the token in env NAME (set by
//	                                  secctx's exec wrapper) and the one in the file
//	                                  at NAME_FILE; with DURATION, keep calling with
//	                                  the file's token every 2s for that long
//	task sleep                        wait for SIGTERM
//	task [-full] watch DURATION FILE...
//	                                  for DURATION, read each FILE (below
//	                                  $FLYTE_SECRETS_DEFAULT_DIR) every 20 ms,
//	                                  as a long task rereads its secrets: print
//	                                  each value when it changes, then how many
//	                                  reads failed or found an empty file
package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/secctx/secctx/internal/flytekit"
)

var full = flag.Bool("full", false, "print whole secret values")

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fail(errors.New("usage: task [-full] env|file-from-env|flytekit|whoami|pyflyte-execute|sleep ARGS"))
	}
	var err error
	switch args[0] {
	case "env":
		err = forEach(args[1:], func(name string) error {
			v, ok := os.LookupEnv(name)
			if !ok {
				return fmt.Errorf("env %s is not set", name)
			}
			fmt.Printf("%s = %s\n", name, show(v))
			return nil
		})
	case "file-from-env":
		err = forEach(args[1:], func(name string) error {
			p, ok := os.LookupEnv(name)
			if !ok {
				return fmt.Errorf("env %s is not set", name)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Printf("%s = %s = %s\n", name, p, show(string(b)))
			return nil
		})
	case "flytekit":
		err = forEach(args[1:], func(ref string) error {
			parts := strings.Split(ref, "/")
			var group, version, key string
			switch len(parts) {
			case 2:
				group, key = parts[0], parts[1]
			case 3:
				group, version, key = parts[0], parts[1], parts[2]
			default:
				return fmt.Errorf("secret %q: want GROUP/KEY or GROUP/VERSION/KEY", ref)
			}
			where, v, err := flytekit.Get(environ(), os.ReadFile, group, version, key)
			if err != nil {
				return err
			}
			fmt.Printf("%s from %s = %s\n", ref, where, show(v))
			return nil
		})
	case "whoami":
		err = whoami()
	case "pyflyte-execute":
		err = listFlytekitSecrets()
	case "call-api":
		err = callAPI(args[1:])
	case "watch":
		err = watch(args[1:])
	case "sleep":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		fail(err)
	}
}

func environ() flytekit.Env {
	env := flytekit.Env{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

func forEach(names []string, f func(string) error) error {
	var errs []error
	for _, n := range names {
		errs = append(errs, f(n))
	}
	return errors.Join(errs...)
}

func show(v string) string {
	if *full {
		return v
	}
	if len(v) > 3 {
		v = v[:3]
	}
	return v + "..."
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "task:", err)
	os.Exit(1)
}

// listFlytekitSecrets prints, sorted, every env var under flytekit's prefix
// and every file under its secrets directory, with values.
func listFlytekitSecrets() error {
	env := environ()
	prefix := env["FLYTE_SECRETS_ENV_PREFIX"]
	if prefix == "" {
		prefix = flytekit.DefaultEnvPrefix
	}
	var lines []string
	for k, v := range env {
		if strings.HasPrefix(k, prefix) {
			lines = append(lines, fmt.Sprintf("env %s = %s", k, show(v)))
		}
	}
	dir := env["FLYTE_SECRETS_DEFAULT_DIR"]
	if dir == "" {
		dir = flytekit.DefaultDir
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// Secret volumes keep their data in ..data and timestamped
		// directories; the files flytekit opens are the links beside them.
		if strings.HasPrefix(d.Name(), "..") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("file %s = %s", p, show(string(b))))
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

// whoami reads the claims of the projected service-account token; it does
// not verify the signature (the API server does that when the token is used).
func whoami() error {
	tok, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/token")
	if err != nil {
		return err
	}
	parts := strings.Split(string(tok), ".")
	if len(parts) != 3 {
		return errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("token payload: %w", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fmt.Errorf("token claims: %w", err)
	}
	fmt.Println("running as", claims.Sub)
	return nil
}

// callAPI calls a resource server as task code would: with the token from
// the env var, then from the file (re-read on every call, as the sidecar
// renews it).
func callAPI(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: task call-api URL NAME [DURATION]")
	}
	url, name := args[0], args[1]
	call := func(from, tok string) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Printf("token from %s = %s; the API says: %d %s", from, show(tok), resp.StatusCode, body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("the API refused the token from %s", from)
		}
		return nil
	}
	tok, ok := os.LookupEnv(name)
	if !ok {
		return fmt.Errorf("env %s is not set", name)
	}
	if err := call("env "+name, tok); err != nil {
		return err
	}
	fileFrom := func() (string, string, error) {
		p, ok := os.LookupEnv(name + "_FILE")
		if !ok {
			return "", "", fmt.Errorf("env %s_FILE is not set", name)
		}
		b, err := os.ReadFile(p)
		return p, string(b), err
	}
	p, tok, err := fileFrom()
	if err != nil {
		return err
	}
	if err := call("file "+p, tok); err != nil {
		return err
	}
	if len(args) < 3 {
		return nil
	}
	d, err := time.ParseDuration(args[2])
	if err != nil {
		return err
	}
	seen := map[string]bool{tok: true}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(2 * time.Second)
		if p, tok, err = fileFrom(); err != nil {
			return err
		}
		if !seen[tok] {
			seen[tok] = true
			fmt.Printf("renewed token read from the file (%d so far)\n", len(seen))
		}
	}
	fmt.Printf("after %s: ", d)
	return call("file "+p, tok)
}

// watch rereads files until its duration ends. A refreshed set of files
// changes by a rename of its ..data link: a read must never fail, nor see
// an empty or partial file, while the sidecar replaces the set.
func watch(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: task watch DURATION FILE...")
	}
	d, err := time.ParseDuration(args[0])
	if err != nil {
		return err
	}
	dir := os.Getenv("FLYTE_SECRETS_DEFAULT_DIR")
	last := map[string]string{}
	reads, failed := 0, 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, f := range args[1:] {
			b, err := os.ReadFile(filepath.Join(dir, f))
			reads++
			if err != nil || len(b) == 0 {
				failed++
				fmt.Printf("%s %s: read failed or empty: %v\n", time.Now().Format(time.RFC3339Nano), f, err)
				continue
			}
			if v := string(b); v != last[f] {
				last[f] = v
				fmt.Printf("%s %s = %s\n", time.Now().Format(time.RFC3339Nano), f, show(v))
			}
		}
	}
	fmt.Printf("reads %d, failed %d\n", reads, failed)
	return nil
}
