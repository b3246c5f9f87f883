{{- define "mc.fullname" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "mc.labels" -}}
app.kubernetes.io/name: motioncontrol
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The tracks that run: stable always, canary when enabled. Each item: name, version,
     replicas, weight. Every per-track template ranges over this one list. */}}
{{- define "mc.tracks" -}}
{{- $canaryWeight := 0 -}}
{{- if .Values.canary.enabled -}}{{- $canaryWeight = int .Values.canary.weight -}}{{- end -}}
{{- $tracks := list (dict "name" "stable" "version" (toString .Values.stable.version) "replicas" .Values.stable.replicas "weight" (sub 100 $canaryWeight)) -}}
{{- if .Values.canary.enabled -}}
{{- $tracks = append $tracks (dict "name" "canary" "version" (toString .Values.canary.version) "replicas" .Values.canary.replicas "weight" $canaryWeight) -}}
{{- end -}}
{{- toJson $tracks -}}
{{- end -}}

{{- define "mc.selector" -}}
app.kubernetes.io/name: motioncontrol
app.kubernetes.io/instance: {{ .root.Release.Name }}
motioncontrol.dev/track: {{ .track.name }}
{{- end -}}

{{- define "mc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "mc.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* Triton's S3 form for a non-AWS endpoint: s3://http://host:port/bucket/prefix/<version> */}}
{{- define "mc.repositoryPath" -}}
{{- printf "s3://%s/%s/%s/%s" (trimSuffix "/" .root.Values.modelRepository.endpoint) .root.Values.modelRepository.bucket .root.Values.modelRepository.prefix .track.version -}}
{{- end -}}

{{/* Weighted backends of one port, shared by the HTTP and the gRPC route. */}}
{{- define "mc.backendRefs" -}}
{{- range $track := fromJsonArray (include "mc.tracks" .root) }}
- name: {{ include "mc.fullname" $.root }}-{{ $track.name }}
  port: {{ $.port }}
  weight: {{ $track.weight }}
{{- end }}
{{- end -}}
