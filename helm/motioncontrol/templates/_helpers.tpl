{{- define "mc.fullname" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "mc.labels" -}}
app.kubernetes.io/name: motioncontrol
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The tracks: each item name, version, replicas, weight; every per-track template ranges
     over this one list. With Argo Rollouts both Services and route backends always exist
     (the Rollout's stableService/canaryService) and the route weights at rest are 100/0:
     the Gateway API plugin moves them during a rollout. Without it: stable always, canary
     when canary.enabled, weighted by canary.weight. */}}
{{- define "mc.tracks" -}}
{{- if .Values.rollouts.enabled -}}
{{- $version := toString .Values.version -}}
{{- toJson (list (dict "name" "stable" "version" $version "replicas" .Values.replicas "weight" 100)
                 (dict "name" "canary" "version" $version "replicas" .Values.replicas "weight" 0)) -}}
{{- else -}}
{{- $canaryWeight := 0 -}}
{{- if .Values.canary.enabled -}}{{- $canaryWeight = int .Values.canary.weight -}}{{- end -}}
{{- $tracks := list (dict "name" "stable" "version" (toString .Values.version) "replicas" .Values.replicas "weight" (sub 100 $canaryWeight)) -}}
{{- if .Values.canary.enabled -}}
{{- $tracks = append $tracks (dict "name" "canary" "version" (toString .Values.canary.version) "replicas" .Values.canary.replicas "weight" $canaryWeight) -}}
{{- end -}}
{{- toJson $tracks -}}
{{- end -}}
{{- end -}}

{{/* Pod selector. With a `track` (the Deployments): that track's pods only. Without (the
     Rollout, its Services, PDB): all the release's Triton pods; Argo Rollouts adds the
     rollouts-pod-template-hash to the Rollout's Services itself. */}}
{{- define "mc.selector" -}}
app.kubernetes.io/name: motioncontrol
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .track }}
motioncontrol.dev/track: {{ .name }}
{{- end }}
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
