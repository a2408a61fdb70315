package apply

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// errorMessage formats a per-object failure as kubectl does, naming the
// source file and line:
//
//	Error from server (Forbidden): error when applying "deploy.yaml:1": deployments.apps "x" is forbidden: ...
//	error: resource mapping not found for name: "x" namespace: "" from "crs.yaml:3": no matches for kind "Foo" in version "v1" ensure CRDs are installed first
//	error: deploy.yaml:1: the namespace from the provided object "a" does not match ...
//
// A field-manager conflict gets a second line saying who owns which field
// and how to proceed.
func errorMessage(obj *Object, verb string, err error) string {
	var nm *namespaceMismatchError
	var status apierrors.APIStatus
	switch {
	case meta.IsNoMatchError(err):
		return fmt.Sprintf("error: resource mapping not found for name: %q namespace: %q from %q: %v ensure CRDs are installed first",
			obj.GetName(), obj.GetNamespace(), obj.Location(), err)
	case errors.As(err, &nm):
		return fmt.Sprintf("error: %s: %v", obj.Location(), err)
	case errors.As(err, &status):
		s := status.Status()
		if u := unknownFieldsStatus(s); u != nil {
			s = *u
		}
		if s.Reason == metav1.StatusReasonInvalid {
			return invalidMessage(obj, verb, s)
		}
		reason := ""
		if s.Reason != "" && s.Reason != metav1.StatusReasonUnknown {
			reason = " (" + string(s.Reason) + ")"
		}
		msg := fmt.Sprintf("Error from server%s: error when %s %q: %s", reason, verb, obj.Location(), s.Message)
		if s.Reason == metav1.StatusReasonConflict && s.Details != nil && len(s.Details.Causes) > 0 {
			msg += "\n" + conflictHelp(obj, s.Details.Causes)
		}
		return msg
	default:
		return fmt.Sprintf("error: when %s %s (%s): %v", verb, obj.Ref(), obj.Location(), err)
	}
}

// invalidMessage prints a 422 as kubectl does, which is not its usual
// "Error from server (Invalid): ...", but
//
//	The Deployment "app" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0
//
// (one "* field: message" line each after the first when there are
// several), followed by where the object came from.
func invalidMessage(obj *Object, verb string, s metav1.Status) string {
	msg := "The request is invalid"
	var causes []string
	if d := s.Details; d == nil {
		if s.Message != "" {
			msg += ": " + s.Message
		}
	} else {
		if d.Kind != "" || d.Name != "" {
			msg = fmt.Sprintf("The %s %q is invalid", d.Kind, d.Name)
		} else if s.Message != "" && len(d.Causes) == 0 {
			msg += ": " + s.Message
		}
		seen := map[string]bool{}
		for _, c := range d.Causes {
			if m := fmt.Sprintf("%s: %s", c.Field, c.Message); !seen[m] {
				seen[m] = true
				causes = append(causes, m)
			}
		}
	}
	switch len(causes) {
	case 0:
	case 1:
		msg += ": " + causes[0]
	default:
		msg += ": \n* " + strings.Join(causes, "\n* ")
	}
	return fmt.Sprintf("%s (when %s %q)", msg, verb, obj.Location())
}

// unknownFieldsStatus rewrites the server's refusal of a server-side apply
// carrying fields the schema does not declare (a 500 without a reason:
// "failed to create typed patch object (ns/x; apps/v1, Kind=Deployment):
// .spec.replicaz: field not declared in schema") as the BadRequest kubectl's
// create or patch gets for the same manifest ("strict decoding error:
// unknown field "spec.replicaz""): the reason and wording people and
// scripts grep for. The server's own words follow in parentheses: they
// name a list element by its key, where kubectl's message gives an index.
// It returns nil for any other status.
func unknownFieldsStatus(s metav1.Status) *metav1.Status {
	if s.Reason != "" && s.Reason != metav1.StatusReasonUnknown && s.Reason != metav1.StatusReasonInternalError {
		return nil
	}
	ms := unknownFieldRE.FindAllStringSubmatch(s.Message, -1)
	if len(ms) == 0 {
		return nil
	}
	var fields, detail []string
	for _, m := range ms {
		fields = append(fields, fmt.Sprintf("unknown field %q", strings.TrimPrefix(m[1], ".")))
		detail = append(detail, m[0])
	}
	s.Reason, s.Code = metav1.StatusReasonBadRequest, 400
	s.Message = fmt.Sprintf("strict decoding error: %s (server-side apply: %s)", strings.Join(fields, ", "), strings.Join(detail, "; "))
	return &s
}

// conflictHelp explains a server-side apply conflict: the server's causes
// name the field and the manager owning it.
func conflictHelp(obj *Object, causes []metav1.StatusCause) string {
	var owned []string
	managers := map[string]bool{}
	for _, c := range causes {
		owned = append(owned, fmt.Sprintf("%s (%s)", c.Field, c.Message))
		if i := strings.Index(c.Message, `"`); i >= 0 {
			if j := strings.Index(c.Message[i+1:], `"`); j >= 0 {
				managers[c.Message[i+1:i+1+j]] = true
			}
		}
	}
	hint := ""
	for m := range managers {
		hint = fmt.Sprintf(", or apply as that manager with --field-manager=%s", m)
		break
	}
	return fmt.Sprintf("  %s: fields owned by another manager: %s; re-run with --force-conflicts to take them over%s, or remove them from the manifest",
		obj.Ref(), strings.Join(owned, "; "), hint)
}
