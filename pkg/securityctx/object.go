package securityctx

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Apply validates sc and writes it onto obj (a pod, or a pod template's
// metadata): the opt-in label and the annotation. It is the one call a
// workflow engine needs.
func Apply(obj metav1.Object, sc *SecurityContext) error {
	if errs := sc.Validate(); len(errs) > 0 {
		return fmt.Errorf("security context: %w", errs)
	}
	v, err := Encode(sc)
	if err != nil {
		return err
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelInject] = "true"
	obj.SetLabels(labels)
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationSecurityContext] = v
	obj.SetAnnotations(annotations)
	return nil
}

// FromAnnotations decodes the SecurityContext annotation. It reports false when
// the annotation is absent. It does not validate; call Validate.
func FromAnnotations(annotations map[string]string) (*SecurityContext, bool, error) {
	v, ok := annotations[AnnotationSecurityContext]
	if !ok {
		return nil, false, nil
	}
	sc, err := Decode([]byte(v))
	return sc, true, err
}
