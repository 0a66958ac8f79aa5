package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/spf13/cobra"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
	"github.com/secctx/secctx/pkg/webhook"
)

func newInjectCommand() *cobra.Command {
	var file, configPath, kubeconfig, namespace, output, agentImage string
	var policyFiles []string
	var flyte bool
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Print a pod as the webhook would admit it, or the webhook's refusal",
		Long: `Read one or more pods (YAML or JSON, "---" between documents) and print each
as the webhook would admit it, or print the webhook's refusal on stderr and
exit 1. Fields secctx does not know are kept, as the API server keeps them.

The service-account check needs a cluster: with --kubeconfig the account is
looked up there; without it the check is skipped and a note says so. With
--kubeconfig the Secrets and keys the pod refers to (kubernetes backend) are
looked up too, as referenceChecks warn does: a missing one is a note.

With --policy, the pods are checked against those SecurityContextPolicies as
in enforce mode, all of them taken as selecting the pods' namespace: a pod
they do not allow is refused, naming what and the policies checked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("flyte") {
				cfg.Inject.Flyte.Enabled = flyte
			}
			if cmd.Flags().Changed("agent-image") {
				cfg.Inject.Agent.Image = agentImage
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("config: %w", err)
			}
			var sas inject.ServiceAccounts
			var keys webhook.SecretKeys
			if kubeconfig != "" {
				c, err := apiClient(kubeconfig)
				if err != nil {
					return err
				}
				sas, keys = &webhook.ServiceAccountLookup{API: c}, webhook.APISecretKeys{Reader: c}
			}
			injector, err := inject.New(cfg.Inject, sas)
			if err != nil {
				return err
			}
			in, err := readInput(cmd.InOrStdin(), file)
			if err != nil {
				return err
			}
			if output != "yaml" && output != "json" && output != "patch" {
				return fmt.Errorf("--output %q: must be yaml, json or patch", output)
			}
			pols, err := readPolicies(policyFiles)
			if err != nil {
				return err
			}
			if pols != nil {
				// As the webhook does: the policies' refresh bounds hold.
				injector.WithRefreshBounds(webhook.PolicyRefreshBounds{Source: givenPolicies(pols)})
			}
			return injectAll(cmd.Context(), injector, checks{policies: pols, keys: keys}, in, namespace, output, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&file, "filename", "f", "", `pod manifest, or "-" for stdin`)
	fs.StringVar(&configPath, "config", "", "YAML config file, as for serve")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "check service accounts, Secrets and keys in this cluster")
	fs.BoolVar(&flyte, "flyte", false, `Flyte mode, as for serve: honour flyte.secrets/s<N> annotations on pods labelled inject-flyte-secrets: "true"`)
	fs.StringVar(&agentImage, "agent-image", "", "secctx's image, for the token sidecar (config inject.agent.image)")
	fs.StringVarP(&namespace, "namespace", "n", "", `namespace of the pods (default: the pod's own, else "default")`)
	fs.StringVarP(&output, "output", "o", "yaml", "yaml or json: the admitted pod; patch: the webhook's JSON patch")
	fs.StringArrayVar(&policyFiles, "policy", nil, "a file of SecurityContextPolicies to check the pods against, as in enforce mode (repeatable)")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

func readInput(stdin io.Reader, file string) ([]byte, error) {
	if file == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read pod: %w", err)
	}
	return b, nil
}

// givenPolicies are the policies of --policy, which the command takes to
// select every namespace.
type givenPolicies []*v1alpha1.SecurityContextPolicy

func (g givenPolicies) Select(context.Context, string) ([]*v1alpha1.SecurityContextPolicy, error) {
	return g, nil
}

// checks are what injectAll checks besides injection itself: policies
// (nil: none) and, when keys is set, the pods' Secret references.
type checks struct {
	policies []*v1alpha1.SecurityContextPolicy
	keys     webhook.SecretKeys
}

// injectAll prints every pod, each as the API server would store it after
// applying the webhook's patch. The first refusal stops it with exit code 1.
func injectAll(ctx context.Context, injector *inject.Injector, chk checks, in []byte, namespace, output string, stdout, stderr io.Writer) error {
	docs, err := jsonDocuments(in)
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return fmt.Errorf("no pod in the input")
	}
	for i, raw := range docs {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if meta.Kind != "Pod" || meta.APIVersion != "v1" {
			return fmt.Errorf("document %d: %s %s: only v1 Pods can be injected", i+1, meta.APIVersion, meta.Kind)
		}
		ns := namespace
		if ns == "" {
			ns = meta.Metadata.Namespace
		}
		if ns == "" {
			ns = "default"
		}
		out, err := injector.InjectJSON(ctx, ns, raw)
		if inject.IsDenied(err) {
			fmt.Fprintln(stderr, err)
			return exitError{code: 1}
		}
		if err != nil {
			return err
		}
		if chk.policies != nil && out.SecurityContext != nil {
			if msg := webhook.PolicyMessage(chk.policies, out.SecurityContext, out.SecretFields, injector.StoreFor, ns); msg != "" {
				fmt.Fprintf(stderr, "pod %s/%s: %s\n", ns, out.Pod.Name, msg)
				return exitError{code: 1}
			}
		}
		for _, n := range out.Notes {
			fmt.Fprintf(stderr, "note: %s\n", n)
		}
		// Which store serves each secret, as inject.backends routed it.
		if sc := out.SecurityContext; sc != nil {
			for i := range sc.Secrets {
				field := fmt.Sprintf("secrets[%d]", i)
				if i < len(out.SecretFields) && out.SecretFields[i] != "" {
					field = out.SecretFields[i]
				}
				fmt.Fprintf(stderr, "store: %s %s from %s\n", field, securityctx.Quote(sc.Secrets[i].Group), injector.StoreFor(sc.Secrets[i].Group))
			}
		}
		// Which secrets the sidecar keeps fresh, and how often.
		if len(out.Refreshed) > 0 {
			fmt.Fprintf(stderr, "refresh: %s every %ds (+ up to %g%%)\n", strings.Join(out.Refreshed, ", "), out.RefreshSeconds, out.RefreshJitter*100)
			if len(out.Leased) > 0 {
				fmt.Fprintf(stderr, "leased: %s: read by the sidecar before the task starts, the lease renewed, and replaced before it ends\n", strings.Join(out.Leased, ", "))
			}
		}
		if chk.keys != nil && out.Patch != nil && len(out.SecretRefs) > 0 {
			problems, err := webhook.CheckReferences(ctx, chk.keys, ns, out.SecretRefs)
			if err != nil {
				fmt.Fprintf(stderr, "note: reference check skipped: %v\n", err)
			}
			for _, p := range problems {
				fmt.Fprintf(stderr, "note: %s\n", webhook.ReferenceWarning(p))
			}
		}
		if output == "patch" {
			if err := writePatch(stdout, out.Patch); err != nil {
				return err
			}
			continue
		}
		if out.Patch != nil {
			p, err := jsonpatch.DecodePatch(out.Patch)
			if err != nil {
				return fmt.Errorf("decode patch: %w", err)
			}
			if raw, err = p.Apply(raw); err != nil {
				return fmt.Errorf("apply patch: %w", err)
			}
		}
		if output == "json" {
			var buf bytes.Buffer
			if err := json.Indent(&buf, raw, "", "  "); err != nil {
				return err
			}
			buf.WriteByte('\n')
			if _, err := buf.WriteTo(stdout); err != nil {
				return err
			}
			continue
		}
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(stdout, "---")
		}
		if _, err := stdout.Write(y); err != nil {
			return err
		}
	}
	return nil
}

// writePatch prints a patch one operation a line, as the API server gets it;
// "[]" when the pod is left as it is.
func writePatch(w io.Writer, patch []byte) error {
	var ops []json.RawMessage
	if patch != nil {
		if err := json.Unmarshal(patch, &ops); err != nil {
			return err
		}
	}
	if len(ops) == 0 {
		_, err := fmt.Fprintln(w, "[]")
		return err
	}
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, op := range ops {
		b.WriteString("  ")
		b.Write(op)
		if i < len(ops)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	_, err := b.WriteTo(w)
	return err
}

// jsonDocuments splits a YAML or JSON stream into its documents, as kubectl
// does, and converts each to JSON; documents that hold nothing (only
// comments) are dropped.
func jsonDocuments(in []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(in)))
	var docs [][]byte
	for n := 1; ; n++ {
		doc, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read document %d: %w", n, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if t := bytes.TrimSpace(j); len(t) > 0 && string(t) != "null" {
			docs = append(docs, j)
		}
	}
}

func apiClient(kubeconfig string) (client.Client, error) {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	// Service accounts and Secrets are all it reads.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connect to the cluster: %w", err)
	}
	return c, nil
}

// readPolicies reads SecurityContextPolicies from YAML or JSON files, "---"
// between documents, strictly; nil without files.
func readPolicies(files []string) ([]*v1alpha1.SecurityContextPolicy, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pols := []*v1alpha1.SecurityContextPolicy{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		docs, err := jsonDocuments(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for i, d := range docs {
			p := &v1alpha1.SecurityContextPolicy{}
			if err := yaml.UnmarshalStrict(d, p); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", f, i+1, err)
			}
			if p.APIVersion != v1alpha1.GroupVersion.String() || p.Kind != "SecurityContextPolicy" {
				return nil, fmt.Errorf("%s: document %d: %s %s: want %s SecurityContextPolicy", f, i+1, p.APIVersion, p.Kind, v1alpha1.GroupVersion)
			}
			pols = append(pols, p)
		}
	}
	return pols, nil
}
