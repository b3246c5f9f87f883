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

{{/* The serving image, tagged with the chart's appVersion unless image.tag says otherwise. */}}
{{- define "mc.image" -}}
"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
{{- end -}}

{{/* Where the model repositories are: MinIO/S3 as the platform's settings name it. */}}
{{- define "mc.storeEnv" -}}
{{- $endpoint := trimSuffix "/" .Values.modelRepository.endpoint -}}
- {name: MC_STORE_BACKEND, value: s3}
- {name: MC_S3_ENDPOINT, value: {{ regexReplaceAll "^https?://" $endpoint "" | quote }}}
- {name: MC_S3_SECURE, value: {{ hasPrefix "https://" $endpoint | quote }}}
- {name: MC_S3_BUCKET, value: {{ .Values.modelRepository.bucket | quote }}}
- {name: MC_S3_REGION, value: {{ .Values.modelRepository.region | quote }}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .Values.modelRepository.credentialsSecret }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.modelRepository.credentialsSecret }}, key: AWS_SECRET_ACCESS_KEY}
{{- end -}}

{{/* Weighted backends of one port, shared by the HTTP and the gRPC route. */}}
{{- define "mc.backendRefs" -}}
{{- range $track := fromJsonArray (include "mc.tracks" .root) }}
- name: {{ include "mc.fullname" $.root }}-{{ $track.name }}
  port: {{ $.port }}
  weight: {{ $track.weight }}
{{- end }}
{{- end -}}
