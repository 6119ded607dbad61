package main

import (
	"strings"
	"testing"
)

// A junit.xml as the pinned suite writes it (trimmed): the same name can
// appear several times, the exchange is in system-err, the reason in
// system-out.
const junitSample = `<testsuites tests="10" errors="0" failures="3" skipped="1" disabled="1">
  <testsuite name="OCI Conformance Test" tests="10" errors="0" failures="3" skipped="1" disabled="1" time="1.0">
    <testcase name="OCI Conformance Test/image/push/blob-post-put" classname="" status="passed"></testcase>
    <testcase name="OCI Conformance Test/sha512/head/blob-head" classname="" status="failure">
      <system-out>unexpected status code, expected one of [200], received 404</system-out>
      <system-err>~~~ RESPONSE ~~~
Status: 404
</system-err>
    </testcase>
    <testcase name="OCI Conformance Test/sha512/head/blob-head" classname="" status="failure"></testcase>
    <testcase name="OCI Conformance Test/non-distributable-layers/push/manifest-by-tag" classname="" status="failure">
      <system-err>~~~ RESPONSE ~~~
Status: 500
Headers:
</system-err>
    </testcase>
    <testcase name="OCI Conformance Test/blob upload cancel" classname="" status="skipped"></testcase>
  </testsuite>
</testsuites>`

func TestParseJUnitCountsLikeTheSuite(t *testing.T) {
	r, err := ParseJUnit([]byte(junitSample))
	if err != nil {
		t.Fatal(err)
	}
	if r.Passed != 5 || r.Failed != 3 || r.Total != 10 {
		t.Fatalf("counts: %+v", r)
	}
	if got, want := r.Summary(), "5 passed, 3 failed of 10 (2 skipped or disabled)"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
	fc := r.FailedCounts()
	if fc["OCI Conformance Test/sha512/head/blob-head"] != 2 || len(fc) != 2 {
		t.Fatalf("failed counts: %v", fc)
	}
	if msgs := r.FailureMessages("OCI Conformance Test/sha512/head/blob-head"); len(msgs) != 2 || !strings.Contains(msgs[0], "received 404") {
		t.Fatalf("messages: %q", msgs)
	}
}

func TestParseJUnitRejectsEmptyReports(t *testing.T) {
	for _, in := range []string{"", "<testsuites></testsuites>", "not xml"} {
		if _, err := ParseJUnit([]byte(in)); err == nil {
			t.Errorf("ParseJUnit(%q) succeeded", in)
		}
	}
}

func TestServerErrorsFoundInExchanges(t *testing.T) {
	r, err := ParseJUnit([]byte(junitSample))
	if err != nil {
		t.Fatal(err)
	}
	got := r.ServerErrors()
	if len(got) != 1 || got[0] != "OCI Conformance Test/non-distributable-layers/push/manifest-by-tag: HTTP 500" {
		t.Fatalf("server errors: %q", got)
	}
}

func TestCountLogServerErrors(t *testing.T) {
	berthLog := `time=x level=INFO msg=request component=http method=GET path=/v2/ status=200 bytes=2
time=x level=ERROR msg="response completed with error" component=distribution http.response.status=500
time=x level=ERROR msg=request component=http method=PUT path=/v2/a/manifests/b status=500 bytes=9
time=x level=INFO msg=request component=http method=GET path=/v2/status=500/x status=404 bytes=9
`
	if n := CountLogServerErrors("berth", berthLog); n != 1 {
		t.Fatalf("berth: %d 5xx, want 1 (one request, logged twice)", n)
	}
	upstream := `time="x" level=error msg="response completed with error" err.code=unknown http.request.id=r1 http.response.status=500 vars.name=a
time="x" level=error msg="response completed with error" err.code=MANIFEST_BLOB_UNKNOWN http.response.status=500 http.request.id=r1
time="x" level=error msg="response completed with error" err.code=unknown http.request.id=r2 http.response.status=500 vars.name=a
time="x" level=info msg="response completed" http.request.id=r3 http.response.status=201
`
	if n := CountLogServerErrors("upstream", upstream); n != 2 {
		t.Fatalf("upstream: %d 5xx, want 2 (one line per error, two requests)", n)
	}
}

func TestParseExpected(t *testing.T) {
	exp, err := ParseExpected(`
# sha512: issue 7
OCI Conformance Test/sha512/head/blob-head x2
  OCI Conformance Test/empty/referrers
`)
	if err != nil {
		t.Fatal(err)
	}
	if exp["OCI Conformance Test/sha512/head/blob-head"] != 2 || exp["OCI Conformance Test/empty/referrers"] != 1 || len(exp) != 2 {
		t.Fatalf("parsed %v", exp)
	}
	for _, bad := range []string{"a\na\n", "a x0\n"} {
		if _, err := ParseExpected(bad); err == nil {
			t.Errorf("ParseExpected(%q) succeeded", bad)
		}
	}
}

func TestCompareFlagsNewFailuresAndNewPasses(t *testing.T) {
	r, err := ParseJUnit([]byte(junitSample))
	if err != nil {
		t.Fatal(err)
	}
	exact := Expected{
		"OCI Conformance Test/sha512/head/blob-head":                         2,
		"OCI Conformance Test/non-distributable-layers/push/manifest-by-tag": 1,
	}
	if v := Compare(r, exact); !v.OK() {
		t.Fatalf("exact list: %+v", v)
	}

	// One blob-head failure more than listed, and one listed test passing.
	v := Compare(r, Expected{
		"OCI Conformance Test/sha512/head/blob-head":                         1,
		"OCI Conformance Test/non-distributable-layers/push/manifest-by-tag": 1,
		"OCI Conformance Test/empty/referrers":                               1,
	})
	if v.OK() {
		t.Fatal("differences not reported")
	}
	if len(v.Unexpected) != 1 || v.Unexpected[0] != "OCI Conformance Test/sha512/head/blob-head" {
		t.Errorf("unexpected: %q", v.Unexpected)
	}
	if len(v.NowPassing) != 1 || v.NowPassing[0] != "OCI Conformance Test/empty/referrers" {
		t.Errorf("now passing: %q", v.NowPassing)
	}

	// A failure that is not listed at all.
	v = Compare(r, Expected{"OCI Conformance Test/sha512/head/blob-head": 2})
	if len(v.Unexpected) != 1 || !strings.Contains(v.Unexpected[0], "non-distributable") {
		t.Errorf("unexpected: %q", v.Unexpected)
	}
}

func TestSuiteEnvTurnsEverythingOn(t *testing.T) {
	env := suiteEnv([]string{"PATH=/bin", "OCI_API_PUSH=false", "OCI_DATA_SHA512=false"}, &registry{host: "127.0.0.1:1", user: "u", pass: "p"}, "/r")
	joined := strings.Join(env, "\n")
	if strings.Contains(joined, "=false") {
		t.Fatalf("a caller's OCI_* setting leaked into the suite: %q", env)
	}
	for _, want := range []string{"PATH=/bin", "OCI_REGISTRY=127.0.0.1:1", "OCI_TLS=disabled", "OCI_RESULTS_DIR=/r", "OCI_USERNAME=u", "OCI_PASSWORD=p"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing %s in %q", want, env)
		}
	}
}
