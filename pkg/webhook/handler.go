package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
)

// MutatePath is where the pod webhook is served.
const MutatePath = "/mutate-v1-pod"

// maxRequestBytes bounds a request body: the API server's own limit on an
// object is 3 MiB, and controller-runtime allows 7 MiB for a review.
const maxRequestBytes = 7 << 20

// The decisions counted in secctx_admission_decisions_total.
const (
	DecisionMutated   = "mutated"
	DecisionUnchanged = "unchanged"
	DecisionDenied    = "denied"
	DecisionError     = "error"
)

// PodMutator serves AdmissionReview requests for pods. It reads the review and
// the pod in one pass and answers with the targeted JSON patch operations that
// pkg/inject computes. controller-runtime's admission.Webhook would decode the
// review through the API machinery's universal deserializer and then the pod
// again, which the benchmarks in docs/performance.md show to cost more than
// all of secctx's own work; the server, TLS, certificate reloading and the
// request metrics are still controller-runtime's.
type PodMutator struct {
	injector  *inject.Injector
	log       logr.Logger
	decisions *prometheus.CounterVec
	// counted holds decisions' counters, looked up once: WithLabelValues
	// hashes the label values and takes a lock on every call.
	counted map[string]prometheus.Counter
	// policies, when not nil, are checked in policyMode (WithPolicy).
	policies   PolicySource
	policyMode string
}

// NewPodMutator registers its metrics with reg.
func NewPodMutator(injector *inject.Injector, log logr.Logger, reg prometheus.Registerer) (*PodMutator, error) {
	m := &PodMutator{
		injector: injector,
		log:      log,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secctx_admission_decisions_total",
			Help: "Pod admission requests by decision: mutated, unchanged, denied or error.",
		}, []string{"decision"}),
	}
	if err := reg.Register(m.decisions); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	m.counted = map[string]prometheus.Counter{}
	for _, d := range []string{DecisionMutated, DecisionUnchanged, DecisionDenied, DecisionError} {
		m.counted[d] = m.decisions.WithLabelValues(d)
	}
	return m, nil
}

// reviewIn is the part of an AdmissionReview (v1 or v1beta1) that secctx
// reads; the pod is decoded in the same pass. Both levels have decoders
// written out (review.go).
type reviewIn struct {
	APIVersion string     `json:"apiVersion"`
	Request    *requestIn `json:"request"`
}

type requestIn struct {
	UID         types.UID               `json:"uid"`
	Kind        metav1.GroupVersionKind `json:"kind"`
	SubResource string                  `json:"subResource"`
	Name        string                  `json:"name"`
	Namespace   string                  `json:"namespace"`
	Operation   admissionv1.Operation   `json:"operation"`
	Object      *inject.PodView         `json:"object"`
}

// reviewOut is an AdmissionReview response, field for field as in
// k8s.io/api/admission/v1.
type reviewOut struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Response   responseOut `json:"response"`
}

type responseOut struct {
	UID       types.UID `json:"uid"`
	Allowed   bool      `json:"allowed"`
	Status    *status   `json:"status,omitempty"`
	Patch     []byte    `json:"patch,omitempty"`
	PatchType string    `json:"patchType,omitempty"`
	Warnings  []string  `json:"warnings,omitempty"`
}

type status struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
	Code    int32  `json:"code"`
}

// reviewDecodeOptions: the API server writes the review from a typed object,
// so it never repeats a name; not tracking names in every object saves a
// tenth of decoding. A repeated name would take the last value, as
// encoding/json does.
var reviewDecodeOptions = jsontext.AllowDuplicateNames(true)

// bufPool holds request and response buffers, patchPool patch buffers:
// allocation per request is what sets how often the garbage collector runs,
// which was a fifth of secctx's CPU under load (docs/performance.md).
var (
	bufPool   = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	patchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
)

func (m *PodMutator) count(decision string) { m.counted[decision].Inc() }

// ServeHTTP implements http.Handler.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		http.Error(w, "content type "+securityctx.Quote(ct)+": want application/json", http.StatusUnsupportedMediaType)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxRequestBytes)); err != nil {
		m.count(DecisionError)
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review reviewIn
	if err := jsonv2.Unmarshal(buf.Bytes(), &review, reviewDecodeOptions); err != nil || review.Request == nil {
		if err == nil {
			err = errors.New("no request in the AdmissionReview")
		}
		m.count(DecisionError)
		// A decoding error can quote the input; the log line and the answer
		// hold at most a few hundred bytes of it.
		msg := securityctx.Shorten(err.Error())
		m.log.Info("bad admission review", "error", msg)
		http.Error(w, "decode AdmissionReview: "+msg, http.StatusBadRequest)
		return
	}
	out := reviewOut{APIVersion: review.APIVersion, Kind: "AdmissionReview"}
	if out.APIVersion == "" {
		out.APIVersion = admissionv1.SchemeGroupVersion.String()
	}
	pb := patchPool.Get().(*[]byte)
	defer patchPool.Put(pb)
	out.Response = m.review(r.Context(), review.Request, (*pb)[:0])
	out.Response.UID = review.Request.UID
	if p := out.Response.Patch; cap(p) > cap(*pb) {
		*pb = p[:0] // the pool keeps the larger array
	}

	b, err := out.appendJSON(buf.Bytes()[:0])
	if err != nil {
		m.log.Error(err, "encode admission response")
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Without a length, net/http sends a response over 2 KB chunked.
	h.Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
	if cap(b) > buf.Cap() {
		*buf = *bytes.NewBuffer(b[:0]) // the pool keeps the larger array
	}
}

// appendJSON writes the review as encoding/json would write the same
// fields. It is written out because the reflection-based encoder was a
// twentieth of a whole request; a test checks that both agree.
func (o *reviewOut) appendJSON(b []byte) ([]byte, error) {
	r := &o.Response
	var err error
	b = append(b, `{"apiVersion":`...)
	b, err = jsontext.AppendQuote(b, o.APIVersion)
	b = append(b, `,"kind":`...)
	b, err = appendQuote(b, o.Kind, err)
	b = append(b, `,"response":{"uid":`...)
	b, err = appendQuote(b, string(r.UID), err)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, r.Allowed)
	if s := r.Status; s != nil {
		b = append(b, `,"status":{"status":`...)
		b, err = appendQuote(b, s.Status, err)
		b = append(b, `,"message":`...)
		b, err = appendQuote(b, s.Message, err)
		if s.Reason != "" {
			b = append(b, `,"reason":`...)
			b, err = appendQuote(b, s.Reason, err)
		}
		b = append(b, `,"code":`...)
		b = strconv.AppendInt(b, int64(s.Code), 10)
		b = append(b, '}')
	}
	if len(r.Patch) > 0 {
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Patch)
		b = append(b, '"')
	}
	if r.PatchType != "" {
		b = append(b, `,"patchType":`...)
		b, err = appendQuote(b, r.PatchType, err)
	}
	if len(r.Warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range r.Warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b, err = appendQuote(b, w, err)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...), err
}

// appendQuote keeps the first error, so a run of appends checks once.
func appendQuote(b []byte, s string, err error) ([]byte, error) {
	if err != nil {
		return b, err
	}
	return jsontext.AppendQuote(b, s)
}

// review answers one request; a patch is appended to patchBuf.
func (m *PodMutator) review(ctx context.Context, req *requestIn, patchBuf []byte) (resp responseOut) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("panic: %v", p)
			m.log.Error(err, "pod not mutated", "namespace", req.Namespace, "uid", req.UID)
			m.count(DecisionError)
			resp = responseOut{Status: &status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: err.Error()}}
		}
	}()
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Object == nil {
		m.count(DecisionUnchanged)
		return responseOut{Allowed: true}
	}
	out, err := m.injector.PatchTo(ctx, patchBuf, req.Object.Pod(), req.Namespace)
	switch {
	case inject.IsDenied(err):
		m.count(DecisionDenied)
		m.log.Info("pod denied", "namespace", req.Namespace, "uid", req.UID, "reason", err.Error())
		return responseOut{Status: &status{Status: metav1.StatusFailure, Reason: string(metav1.StatusReasonForbidden),
			Code: http.StatusForbidden, Message: err.Error()}}
	case err != nil:
		m.count(DecisionError)
		m.log.Error(err, "pod not mutated", "namespace", req.Namespace, "uid", req.UID)
		return responseOut{Status: &status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: err.Error()}}
	}
	var warnings []string
	if m.policies != nil && out.SecurityContext != nil {
		msg, err := m.checkPolicy(ctx, req.Namespace, out.SecurityContext)
		switch {
		case err != nil:
			m.count(DecisionError)
			m.log.Error(err, "pod not mutated", "namespace", req.Namespace, "uid", req.UID)
			return responseOut{Status: &status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: err.Error()}}
		case msg != "" && m.policyMode == PolicyEnforce:
			m.count(DecisionDenied)
			m.log.Info("pod denied", "namespace", req.Namespace, "uid", req.UID, "reason", msg)
			return responseOut{Status: &status{Status: metav1.StatusFailure, Reason: string(metav1.StatusReasonForbidden),
				Code: http.StatusForbidden, Message: "pod " + req.Namespace + "/" + podName(out.Pod) + ": " + msg}}
		case msg != "":
			m.log.Info("pod admitted that policy enforcement would deny", "namespace", req.Namespace, "uid", req.UID, "policyMode", m.policyMode, "reason", msg)
			warnings = append(warnings, "policy audit: "+msg)
		}
	}
	if out.Patch == nil {
		m.count(DecisionUnchanged)
		return responseOut{Allowed: true, Warnings: warnings}
	}
	m.count(DecisionMutated)
	if v := m.log.V(1); v.Enabled() {
		v.Info("pod mutated", "namespace", req.Namespace, "uid", req.UID, "patchBytes", len(out.Patch))
	}
	return responseOut{Allowed: true, Patch: out.Patch, PatchType: string(admissionv1.PatchTypeJSONPatch), Warnings: append(warnings, out.Notes...)}
}

// podName is the pod's name, or its generateName and *.
func podName(p *corev1.Pod) string {
	if p.Name == "" && p.GenerateName != "" {
		return p.GenerateName + "*"
	}
	return p.Name
}
