{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "blobfs.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "blobfs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "blobfs.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "blobfs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "blobfs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "blobfs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "blobfs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Node state directory: csi.sock, mounter.sock, node records, token files. */}}
{{- define "blobfs.stateDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.kubeletDir) .Values.driverName -}}
{{- end -}}

{{- define "blobfs.controllerServiceAccount" -}}
{{- default (printf "%s-controller" (include "blobfs.fullname" .)) .Values.serviceAccount.controller.name -}}
{{- end -}}

{{- define "blobfs.nodeServiceAccount" -}}
{{- default (printf "%s-node" (include "blobfs.fullname" .)) .Values.serviceAccount.node.name -}}
{{- end -}}

{{/* Where the mounter sees the node cache (its --cache-dir). */}}
{{- define "blobfs.cacheMountPath" -}}/var/cache/blobfs{{- end -}}
