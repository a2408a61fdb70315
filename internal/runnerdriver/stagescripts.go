package runnerdriver

import "strconv"

func (jr *jobRun) writer() *scriptWriter {
	w := &scriptWriter{tmpDir: jr.projectDir + ".tmp", envMod: jr.d.cfg.GitlabEnv}
	v := jr.d.ver
	w.subshell = v.subshellBody() && jr.variable("FF_USE_LEGACY_BASH_EVAL") != "true"
	if v.gitConfigGlobal() && jr.variable("FF_GIT_URLS_WITHOUT_TOKENS") == "true" {
		w.gitConfigGlobal = w.tmpFile(".glr.gconf")
	}
	return w
}

// credentialReject is 19.3's best-effort `git credential reject` of the
// server's credentials (end of get_sources, cleanup_file_variables).
func (jr *jobRun) credentialReject(w *scriptWriter) {
	w.line("printf 'url=%s\\n\\n' " + shellEscape(jr.d.cfg.ServerURL) + " | git credential reject >/dev/null 2>&1 || true")
}

// prepareScript only says where the job runs (no exports: the runner's
// prepare_script has none).
func (jr *jobRun) prepareScript() string {
	w := jr.writer()
	if jr.hostname != "" {
		w.line("echo " + strconv.Quote("Running on $(hostname) via "+jr.hostname+"..."))
	} else {
		w.line("echo " + strconv.Quote("Running on $(hostname)..."))
	}
	if jr.d.ver.gitlabEnvLines() {
		// 17.7+: a GITLAB_ENV left by an earlier job is not read again.
		w.command("rm", "-f", w.tmpFile("gitlab_runner_env"))
	}
	return w.finish()
}

// variable is the value of the job variable key as the stage scripts see it.
func (jr *jobRun) variable(key string) string {
	val := ""
	for _, v := range jr.allVariables() {
		if v.Key == key {
			val = v.Value
		}
	}
	return val
}

// gitStrategy is GIT_STRATEGY; the default for the custom executor (a shared
// environment) is fetch.
func (jr *jobRun) gitStrategy() string {
	for _, v := range jr.allVariables() {
		if v.Key == "GIT_STRATEGY" && v.Value != "" {
			return v.Value
		}
	}
	return "fetch"
}

func (jr *jobRun) getSourcesScript() string {
	w := jr.writer()
	w.exports(jr.allVariables())
	// hooks:pre_get_sources_script runs first, in the same stage.
	w.commands(jr.job.PreGetSourcesScript, jr.d.cfg.ScriptSections, "pre_get_sources_script")
	proj := jr.projectDir
	clone := func() {
		tmpl := w.tmpFile("git-template")
		w.command("mkdir", "-p", tmpl)
		w.command("rm", "-r", "-f", proj)
		w.command("git", "config", "-f", tmpl+"/config", "fetch.recurseSubmodules", "false")
		w.notice("Cloning repository...")
		w.command("git", "clone", "--no-checkout", jr.jc.repoURL, proj, "--template", tmpl)
		w.command("cd", proj)
	}
	strategy := jr.gitStrategy()
	switch strategy {
	case "none":
		w.notice("Skipping Git repository setup")
		w.command("mkdir", "-p", proj)
	case "clone":
		clone()
	default:
		w.linef("if [ -d %q ]; then", proj+"/.git")
		w.notice("Fetching changes...")
		w.command("cd", proj)
		w.command("git", "config", "fetch.recurseSubmodules", "false")
		w.command("rm", "-f", ".git/index.lock")
		w.command("rm", "-f", ".git/shallow.lock")
		w.command("git", "clean", "-ffdx")
		w.command("git", "reset", "--hard")
		w.command("git", "remote", "set-url", "origin", jr.jc.repoURL)
		w.command("git", "fetch", "origin", "--prune", "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
		w.line("else")
		clone()
		w.line("fi")
	}
	if strategy != "none" {
		w.notice("Checking out " + jr.jc.sha[:8] + " as " + jr.jc.ref + "...")
		w.command("git", "checkout", "-f", "-q", jr.jc.sha)
	}
	w.notice("Skipping Git submodules setup")
	if jr.d.ver.cleanupExportsAll() {
		jr.credentialReject(w)
	}
	return w.finish()
}

// guardRunner wraps uses of the gitlab-runner binary like the runner does.
func guardRunner(w *scriptWriter, action string, body func()) {
	w.line("if gitlab-runner --version >/dev/null 2>&1; then")
	body()
	w.line("else")
	w.warning("Missing gitlab-runner. " + action + " is disabled.")
	w.line("fi")
}

func (jr *jobRun) downloadScript(deps []dependency) string {
	w := jr.writer()
	w.exports(jr.allVariables())
	w.command("cd", jr.projectDir)
	guardRunner(w, "Artifacts downloading", func() {
		for _, dep := range deps {
			w.notice("Downloading artifacts for " + dep.Name + " (" + strconv.Itoa(dep.ID) + ")...")
			w.command("gitlab-runner", "artifacts-downloader", "--url", jr.d.cfg.ServerURL,
				"--token", dep.Token, "--id", strconv.Itoa(dep.ID))
		}
	})
	return w.finish()
}

func (jr *jobRun) userScript(cmds []string) string {
	w := jr.writer()
	w.exports(jr.allVariables())
	w.command("cd", jr.projectDir)
	w.commands(cmds, jr.d.cfg.ScriptSections, "script_step")
	return w.finish()
}

func (jr *jobRun) afterScript() string {
	w := jr.writer()
	w.exports(jr.allVariables())
	w.command("cd", jr.projectDir)
	w.notice("Running after script...")
	w.commands(jr.job.AfterScript, jr.d.cfg.ScriptSections, "after_script_step")
	return w.finish()
}

func (jr *jobRun) uploadScript(arts []Artifact) string {
	w := jr.writer()
	w.exports(jr.allVariables())
	w.command("cd", jr.projectDir)
	for _, a := range arts {
		typ, format := a.Type, a.Format
		if typ == "" {
			typ = "archive"
		}
		if format == "" {
			format = "zip"
			if typ != "archive" {
				format = "gzip"
			}
		}
		args := []string{"artifacts-uploader", "--url", jr.d.cfg.ServerURL, "--token", jr.token, "--id", strconv.Itoa(jr.id)}
		for _, p := range a.Paths {
			args = append(args, "--path", p)
		}
		if a.Name != "" {
			args = append(args, "--name", a.Name)
		}
		if a.ExpireIn != "" {
			args = append(args, "--expire-in", a.ExpireIn)
		}
		args = append(args, "--artifact-format", format, "--artifact-type", typ)
		guardRunner(w, "Uploading artifacts", func() {
			w.notice("Uploading artifacts...")
			w.command("gitlab-runner", args...)
		})
	}
	return w.finish()
}

// cleanupFileVariablesScript removes what the stage scripts wrote into
// <CI_PROJECT_DIR>.tmp: File variables and GITLAB_ENV. Since 19.3 it first
// exports every job variable and GITLAB_ENV like the other stages (so the
// script holds every value in clear), reads the file back and runs a
// best-effort `git credential reject`.
func (jr *jobRun) cleanupFileVariablesScript() string {
	w := jr.writer()
	if jr.d.ver.cleanupExportsAll() {
		w.exports(jr.allVariables())
		jr.credentialReject(w)
	}
	for _, v := range jr.allVariables() {
		if v.File {
			w.command("rm", "-f", w.tmpFile(v.Key))
		}
	}
	w.command("rm", "-f", w.tmpFile("gitlab_runner_env"))
	return w.finish()
}
