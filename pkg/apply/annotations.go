package apply

// Annotation keys ferry sets on applied objects so a live object says which
// project, commit, pipeline and job put it there.
const (
	AnnotationProject     = "ferry.gitlab.io/project"      // CI_PROJECT_PATH
	AnnotationCommitSHA   = "ferry.gitlab.io/commit-sha"   // CI_COMMIT_SHA
	AnnotationPipelineURL = "ferry.gitlab.io/pipeline-url" // CI_PIPELINE_URL
	AnnotationJobURL      = "ferry.gitlab.io/job-url"      // CI_JOB_URL
)

// TraceAnnotations builds ApplyOptions.Annotations from the job's variables.
//
// By default only the project and the commit are recorded: they change only
// when the code does, so re-running a pipeline (or a retry of the job) on
// the same commit leaves objects "unchanged". The pipeline and job URLs
// change on every run and would make every object "configured" every time
// (and bump its resourceVersion, waking every controller watching it); they
// are added only when withJob is true. Unset variables are left out.
func TraceAnnotations(lookup func(string) (string, bool), withJob bool) map[string]string {
	keys := map[string]string{
		AnnotationProject:   "CI_PROJECT_PATH",
		AnnotationCommitSHA: "CI_COMMIT_SHA",
	}
	if withJob {
		keys[AnnotationPipelineURL] = "CI_PIPELINE_URL"
		keys[AnnotationJobURL] = "CI_JOB_URL"
	}
	out := map[string]string{}
	for ann, v := range keys {
		if val, ok := lookup(v); ok && val != "" {
			out[ann] = val
		}
	}
	return out
}
