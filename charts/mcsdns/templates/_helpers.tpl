{{/*
Names, labels and the derived settings every template shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "mcsdns.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else <release>-<chart> (just <release> when it already
contains the chart name). 63 characters at most (DNS label; Service names).
*/}}
{{- define "mcsdns.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: <name>-<version>, + replaced (not valid in labels). */}}
{{- define "mcsdns.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "mcsdns.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcsdns.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "mcsdns.labels" -}}
helm.sh/chart: {{ include "mcsdns.chart" . }}
{{ include "mcsdns.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: dns
app.kubernetes.io/part-of: mcsdns
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "mcsdns.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcsdns.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The container image, tag defaulting to the chart's appVersion. */}}
{{- define "mcsdns.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Whether a Lease elects the writer: only the controller writes, so without Cloud Map there is no election
(and no Role for leases). Renders "true" or "" (use with `if`).
*/}}
{{- define "mcsdns.leaderElect" -}}
{{- if and .Values.cloudmap.enabled .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/* The Lease's name. */}}
{{- define "mcsdns.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (printf "%s-leader" (include "mcsdns.fullname" .)) }}
{{- end }}

{{/*
Whether mcsdns reads ClusterProperties: it watches them unless both ids are given (KEP-2149). Renders
"true" or "".
*/}}
{{- define "mcsdns.readsClusterProperties" -}}
{{- if not (and .Values.clusterId .Values.clustersetId) }}true{{ end }}
{{- end }}

{{/* Whether the DNS port is privileged (below 1024): "true" or "". */}}
{{- define "mcsdns.privilegedPort" -}}
{{- if and (include "mcsdns.servesDns" .) (lt (int .Values.dns.port) 1024) }}true{{ end }}
{{- end }}

{{/* Whether the pods serve DNS (dns.enabled, default true): "true" or "". Controller only needs Cloud Map. */}}
{{- define "mcsdns.servesDns" -}}
{{- if or (not (hasKey .Values.dns "enabled")) .Values.dns.enabled }}true
{{- else if not .Values.cloudmap.enabled }}
{{- fail "dns.enabled=false runs mcsdns as the MCS controller only, which needs Cloud Map: set cloudmap.enabled=true (or keep dns.enabled=true)" }}
{{- end }}
{{- end }}

{{/* MCSDNS_LISTEN: every address in dns.addresses with dns.port, comma separated. */}}
{{- define "mcsdns.listen" -}}
{{- $port := int .Values.dns.port }}
{{- $out := list }}
{{- range .Values.dns.addresses }}
{{- if contains ":" . }}
{{- $out = append $out (printf "[%s]:%d" . $port) }}
{{- else }}
{{- $out = append $out (printf "%s:%d" . $port) }}
{{- end }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{/*
The MCSDNS_* settings from the values, as a YAML list of env entries. A value that is "" or [] is left out,
so mcsdns's own default applies; lists are joined with commas (how mcsdns reads repeatable settings from the
environment). Every pair is (variable, value); values.yaml names the variable of each key.
*/}}
{{- define "mcsdns.settingsEnv" -}}
{{- $leaderElect := include "mcsdns.leaderElect" . }}
{{- $settings := list
  (list "MCSDNS_KUBECONFIG" "in-cluster")
  (list "MCSDNS_DNS" (ternary "" "false" (eq (include "mcsdns.servesDns" .) "true")))
  (list "MCSDNS_LISTEN" (ternary (include "mcsdns.listen" .) "" (eq (include "mcsdns.servesDns" .) "true")))
  (list "MCSDNS_HTTP" (printf "0.0.0.0:%d" (int .Values.metrics.port)))
  (list "MCSDNS_ZONE" .Values.zone)
  (list "MCSDNS_TTL" .Values.ttl)
  (list "MCSDNS_DNS_VERSION" .Values.dnsVersion)
  (list "MCSDNS_PREFER_LOCAL_CLUSTER" (ternary "true" "" (.Values.preferLocalCluster | default false)))
  (list "MCSDNS_PTR" (ternary "true" "" (.Values.ptr | default false)))
  (list "MCSDNS_FORWARD" .Values.forwarders)
  (list "MCSDNS_FORWARD_ALLOW" .Values.forwardAllow)
  (list "MCSDNS_FORWARD_CACHE_SIZE" .Values.forwardCacheSize)
  (list "MCSDNS_FORWARD_CACHE_BYTES" .Values.forwardCacheBytes)
  (list "MCSDNS_FORWARD_SERVE_STALE" .Values.forwardServeStale)
  (list "MCSDNS_WORKERS" .Values.dns.workers)
  (list "MCSDNS_STATE_DIR" (ternary "/var/lib/mcsdns" "" .Values.state.enabled))
  (list "MCSDNS_MAX_STALE" (ternary .Values.state.maxStale "" .Values.state.enabled))
  (list "MCSDNS_TCP_IDLE_TIMEOUT" .Values.dns.tcpIdleTimeout)
  (list "MCSDNS_TCP_MAX_CONNECTIONS" .Values.dns.tcpMaxConnections)
  (list "MCSDNS_TCP_MAX_LIFETIME" .Values.dns.tcpMaxLifetime)
  (list "MCSDNS_CLUSTER_ID" .Values.clusterId)
  (list "MCSDNS_CLUSTERSET_ID" .Values.clustersetId)
  (list "MCSDNS_CLOUDMAP" (ternary "true" "false" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_CLOUDMAP_POLL" (ternary .Values.cloudmap.poll "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_CLUSTER_STALE_AFTER" (ternary (.Values.cloudmap.staleAfter | default "") "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_EVICT_STALE_CLUSTERS" (ternary "true" "" (and (.Values.cloudmap.enabled | default false) (.Values.cloudmap.evictStaleClusters | default false))))
  (list "MCSDNS_STALE_CLUSTER_GRACE" (ternary (.Values.cloudmap.staleGrace | default "") "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_CLOUDMAP_RATE" (ternary (toString (.Values.cloudmap.rate | default "")) "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_CLOUDMAP_MAX_STALENESS" (ternary (.Values.cloudmap.maxStaleness | default "") "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_CLOUDMAP_OWNER_ACCOUNT" (ternary (toString (.Values.cloudmap.ownerAccount | default "")) "" (.Values.cloudmap.enabled | default false)))
  (list "AWS_REGION" (ternary .Values.aws.region "" (.Values.cloudmap.enabled | default false)))
  (list "MCSDNS_LEADER_ELECT" (ternary "true" "false" (eq $leaderElect "true")))
  (list "MCSDNS_LEASE_NAME" (ternary (include "mcsdns.leaseName" .) "" (eq $leaderElect "true")))
  (list "MCSDNS_LEASE_DURATION" (ternary .Values.leaderElection.leaseDuration "" (eq $leaderElect "true")))
  (list "MCSDNS_RENEW_DEADLINE" (ternary .Values.leaderElection.renewDeadline "" (eq $leaderElect "true")))
  (list "MCSDNS_LAMEDUCK" .Values.lameduck)
  (list "MCSDNS_LOG_FORMAT" .Values.logFormat)
  (list "MCSDNS_LOG_LEVEL" .Values.logLevel)
}}
{{- $env := list }}
{{- range $pair := $settings }}
{{- $value := index $pair 1 }}
{{- if kindIs "slice" $value }}
{{- $value = join "," $value }}
{{- else if kindIs "float64" $value }}
{{- $value = int64 $value }}
{{- end }}
{{- if or (not (empty $value)) (eq (toString $value) "0") }}
{{- $env = append $env (dict "name" (index $pair 0) "value" (toString $value)) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}
