package beacon

import (
	"math"
	"strings"
	"testing"
)

func TestALoadReportIsReadAndHostileValuesAreClampedOrRefused(t *testing.T) {
	report, clamped, ok := parseLoadReport("TEXT cpu_utilization=0.3, application_utilization=0.5, rps_fractional=10.0, eps=1, named_metrics.in_flight=3")
	if !ok || clamped || report.utilization != 0.5 || report.rps != 10 || report.eps != 1 || report.named["in_flight"] != 3 {
		t.Fatalf("the issue's example: %+v clamped=%v ok=%v", report, clamped, ok)
	}
	// No application_utilization: the CPU's stands for it.
	if report, _, _ := parseLoadReport("TEXT cpu_utilization=0.7"); report.utilization != 0.7 {
		t.Fatalf("cpu only: %+v", report)
	}
	for _, hostile := range []string{
		"TEXT application_utilization=-1", "TEXT application_utilization=NaN", "TEXT application_utilization=1e9",
		"TEXT rps_fractional=-5", "TEXT eps=+Inf", "TEXT application_utilization=lots",
	} {
		report, clamped, ok := parseLoadReport(hostile)
		if !ok || !clamped || report.utilization < 0 || report.utilization > 1 || report.rps < 0 || report.eps > 1e9 || math.IsNaN(report.utilization) {
			t.Errorf("%q: %+v clamped=%v ok=%v", hostile, report, clamped, ok)
		}
	}
	for _, malformed := range []string{"", "JSON {}", "TEXT", "TEXT =1", "TEXT cpu_utilization", "text cpu_utilization=0.1", "TEXT " + strings.Repeat("a=1, ", 1000)} {
		if _, _, ok := parseLoadReport(malformed); ok {
			t.Errorf("%q read as a report", malformed)
		}
	}
	// Named metrics are bounded in number: a member cannot grow this host's memory.
	if report, _, _ := parseLoadReport("TEXT " + strings.Repeat("named_metrics.x=1, ", 3) + "named_metrics.a=1, named_metrics.b=2"); len(report.named) > 16 {
		t.Fatal("unbounded")
	}
}
